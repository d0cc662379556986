"""Streaming mIoU over mask files, usable alone:

    python -m bao.evaluate --pred DIR --gt DIR --num-classes K [--ids FILE] [--names FILE] --out metrics.json

Predictions and ground truth are class-index or palette PNGs named ``<id>.png``; 255 in the
ground truth is ignored. Each worker decodes one (ground truth, prediction) pair and returns only
its small (K, K) confusion matrix, so memory does not grow with the number of images and the
counting runs in parallel with decoding.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bao.data.palette import read_mask
from bao.io import write_json
from bao.metrics import ConfusionMatrix, confusion_counts

POOLS = ("thread", "process")
DEFAULT_POOL = "thread"  # library callers may hold torch, CUDA or threads: nothing to fork
CLI_POOL = "process"  # the command line holds none of them, and PNG decoding holds the GIL


def default_workers() -> int:
    return min(8, os.cpu_count() or 1)


def load_pair(pair: tuple[Path, Path]) -> tuple[np.ndarray, np.ndarray]:
    """Both masks of a pair; a missing file or a size mismatch names the prediction file."""
    gt_path, pred_path = pair
    if not pred_path.is_file():
        raise FileNotFoundError(f"{pred_path}: prediction missing for ground truth {gt_path}")
    gt, pred = read_mask(gt_path), read_mask(pred_path)
    if gt.shape != pred.shape:
        raise ValueError(
            f"{pred_path}: prediction size {pred.shape[1]}x{pred.shape[0]} differs from ground truth "
            f"{gt_path} {gt.shape[1]}x{gt.shape[0]} (width x height)"
        )
    return gt, pred


def pair_confusion(pair: tuple[Path, Path], num_classes: int) -> np.ndarray:
    """(K, K) counts of one pair, computed in the worker that decoded it."""
    gt, pred = load_pair(pair)
    try:
        return confusion_counts(gt, pred, num_classes)
    except ValueError as error:
        raise ValueError(f"{pair[1]} vs {pair[0]}: {error} (check --num-classes)") from None


def make_pool(kind: str, workers: int) -> Executor:
    if kind not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {kind!r}")
    if kind == "thread":
        return ThreadPoolExecutor(workers)
    import multiprocessing  # only when processes are asked for
    from concurrent.futures import ProcessPoolExecutor

    # fork starts a worker in milliseconds with the modules already imported; it is safe only in
    # a process without threads (the CLI), so anywhere else the platform's default start is kept
    single_threaded = threading.active_count() == 1 and "torch" not in sys.modules
    fork = sys.platform.startswith("linux") and single_threaded
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork" if fork else None))


def map_pairs(function: Callable, pairs: Sequence[tuple[Path, Path]], workers: int, pool: str) -> Iterator:
    """``function`` over pairs in a pool, results in order; chunks amortise inter-process traffic."""
    if workers <= 1:
        yield from map(function, pairs)
        return
    chunksize = max(1, min(32, len(pairs) // (workers * 8))) if pool == "process" else 1
    with make_pool(pool, workers) as executor:
        yield from executor.map(function, pairs, chunksize=chunksize)


def check_predictions_exist(pairs: Sequence[tuple[Path, Path]]) -> None:
    """Fail before any decoding when predictions are missing, naming the first few."""
    missing = [pred for _, pred in pairs if not pred.is_file()]
    if missing:
        shown = ", ".join(str(path) for path in missing[:5])
        raise FileNotFoundError(f"{len(missing)} of {len(pairs)} predictions missing: {shown}{' ...' if len(missing) > 5 else ''}")


def evaluate_pairs(
    pairs: Sequence[tuple[Path, Path]], num_classes: int, workers: int | None = None, pool: str = DEFAULT_POOL
) -> ConfusionMatrix:
    """Confusion matrix over (ground truth, prediction) path pairs, decoded by ``workers`` in parallel."""
    check_predictions_exist(pairs)
    matrix = ConfusionMatrix(num_classes)
    for counts in map_pairs(functools.partial(pair_confusion, num_classes=num_classes), pairs, workers or default_workers(), pool):
        matrix.add(counts)
    return matrix


def pairs_from_dirs(pred_dir: Path, gt_dir: Path, ids: Sequence[str] | None) -> list[tuple[Path, Path]]:
    if not gt_dir.is_dir():
        raise FileNotFoundError(f"{gt_dir}: ground-truth directory not found")
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"{pred_dir}: prediction directory not found")
    if ids is None:
        ids = sorted(path.stem for path in gt_dir.glob("*.png"))
    if not ids:
        raise ValueError(f"{gt_dir}: no ground-truth PNG files to evaluate")
    pairs = [(gt_dir / f"{image_id}.png", pred_dir / f"{image_id}.png") for image_id in ids]
    missing_gt = [gt for gt, _ in pairs if not gt.is_file()]
    if missing_gt:
        raise FileNotFoundError(f"{missing_gt[0]}: ground truth missing ({len(missing_gt)} of {len(pairs)} ids)")
    return pairs


def read_lines(path: Path | None) -> list[str] | None:
    if path is None:
        return None
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="mIoU of predicted masks against ground-truth masks")
    parser.add_argument("--pred", type=Path, required=True, help="directory of predicted <id>.png")
    parser.add_argument("--gt", type=Path, required=True, help="directory of ground-truth <id>.png")
    parser.add_argument("--num-classes", type=int, required=True, help="classes including background")
    parser.add_argument("--ids", type=Path, help="file listing the ids to evaluate (default: every gt PNG)")
    parser.add_argument("--names", type=Path, help="file with one class name per line")
    parser.add_argument("--workers", type=int, default=None, help=f"decoding workers (default {default_workers()})")
    parser.add_argument("--pool", choices=POOLS, default=CLI_POOL, help=f"decode in threads or processes (default {CLI_POOL})")
    parser.add_argument("--out", type=Path, required=True, help="metrics JSON to write")
    args = parser.parse_args(argv)
    try:
        names = read_lines(args.names)
        if names is not None and len(names) != args.num_classes:
            raise ValueError(f"{args.names}: {len(names)} class names for --num-classes {args.num_classes}")
        pairs = pairs_from_dirs(args.pred, args.gt, read_lines(args.ids))
        metrics = evaluate_pairs(pairs, args.num_classes, args.workers, args.pool).compute(names)
    except (OSError, ValueError) as error:
        parser.exit(2, f"error: {error}\n")
    write_json(args.out, metrics)
    print(f"mIoU {metrics['miou']:.4f}  pixel accuracy {metrics['pixel_accuracy']:.4f}  -> {args.out}")


if __name__ == "__main__":
    main()
