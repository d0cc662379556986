"""Streaming mIoU over mask files, usable alone:

    python -m bao.evaluate --pred DIR --gt DIR --num-classes K [--ids FILE] [--names FILE] --out metrics.json

Predictions and ground truth are class-index or palette PNGs named ``<id>.png``; 255 in the
ground truth is ignored. Masks are decoded in a thread pool and folded into one confusion
matrix as they arrive, so memory does not grow with the number of images.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bao.data.palette import read_mask
from bao.io import write_json
from bao.metrics import ConfusionMatrix


def _load_pair(pair: tuple[Path, Path]) -> tuple[np.ndarray, np.ndarray]:
    gt_path, pred_path = pair
    if not pred_path.is_file():
        raise FileNotFoundError(f"{pred_path}: prediction missing for ground truth {gt_path}")
    gt, pred = read_mask(gt_path), read_mask(pred_path)
    if gt.shape != pred.shape:
        raise ValueError(f"{pred_path}: prediction size {pred.shape[::-1]} differs from ground truth {gt_path} {gt.shape[::-1]}")
    return gt, pred


def evaluate_pairs(pairs: Sequence[tuple[Path, Path]], num_classes: int, workers: int | None = None) -> ConfusionMatrix:
    """Confusion matrix over (ground truth, prediction) path pairs."""
    matrix = ConfusionMatrix(num_classes)
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for gt, pred in pool.map(_load_pair, pairs):
            try:
                matrix.update(gt, pred)
            except ValueError as error:
                raise ValueError(f"{error} (in one of {len(pairs)} pairs; check --num-classes)") from None
    return matrix


def pairs_from_dirs(pred_dir: Path, gt_dir: Path, ids: Sequence[str] | None) -> list[tuple[Path, Path]]:
    if ids is None:
        ids = sorted(path.stem for path in gt_dir.glob("*.png"))
    if not ids:
        raise ValueError(f"{gt_dir}: no ground-truth PNG files to evaluate")
    return [(gt_dir / f"{image_id}.png", pred_dir / f"{image_id}.png") for image_id in ids]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="mIoU of predicted masks against ground-truth masks")
    parser.add_argument("--pred", type=Path, required=True, help="directory of predicted <id>.png")
    parser.add_argument("--gt", type=Path, required=True, help="directory of ground-truth <id>.png")
    parser.add_argument("--num-classes", type=int, required=True, help="classes including background")
    parser.add_argument("--ids", type=Path, help="file listing the ids to evaluate (default: every gt PNG)")
    parser.add_argument("--names", type=Path, help="file with one class name per line")
    parser.add_argument("--workers", type=int, default=None, help="decoding threads")
    parser.add_argument("--out", type=Path, required=True, help="metrics JSON to write")
    args = parser.parse_args(argv)
    ids = [line.strip() for line in args.ids.read_text().splitlines() if line.strip()] if args.ids else None
    names = [line.strip() for line in args.names.read_text().splitlines() if line.strip()] if args.names else None
    matrix = evaluate_pairs(pairs_from_dirs(args.pred, args.gt, ids), args.num_classes, args.workers)
    metrics = matrix.compute(names)
    write_json(args.out, metrics)
    print(f"mIoU {metrics['miou']:.4f}  pixel accuracy {metrics['pixel_accuracy']:.4f}  -> {args.out}")


if __name__ == "__main__":
    main()
