"""The per-class loop evaluator most WSSS repositories ship, as a baseline for ``bao.evaluate``.

    python -m benchmarks.loop_evaluator --pred DIR --gt DIR --num-classes K --out FILE

For each image and each class it sums pred==k, gt==k and both (255 in the ground truth is
ignored). As a command it imports what such a script imports (numpy, PIL through our mask
reader), so timing it as a subprocess includes a realistic process start.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bao.data.palette import IGNORE_INDEX, read_mask


def loop_evaluator_iou(pairs, num_classes: int) -> np.ndarray:
    """Per-class IoU over (gt path, pred path) pairs; NaN for a class absent from both."""
    tp = np.zeros(num_classes, np.int64)
    pred_total = np.zeros(num_classes, np.int64)
    gt_total = np.zeros(num_classes, np.int64)
    for gt_path, pred_path in pairs:
        gt, pred = read_mask(gt_path), read_mask(pred_path)
        valid = gt != IGNORE_INDEX
        for k in range(num_classes):
            pred_k = (pred == k) & valid
            gt_k = gt == k
            tp[k] += np.sum(pred_k & gt_k)
            pred_total[k] += np.sum(pred_k)
            gt_total[k] += np.sum(gt_k)
    union = pred_total + gt_total - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pred", type=Path, required=True)
    parser.add_argument("--gt", type=Path, required=True)
    parser.add_argument("--num-classes", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True, help="per-class IoU as JSON (null for an absent class)")
    args = parser.parse_args()
    ids = sorted(path.stem for path in args.gt.glob("*.png"))
    iou = loop_evaluator_iou([(args.gt / f"{i}.png", args.pred / f"{i}.png") for i in ids], args.num_classes)
    args.out.write_text(json.dumps([None if np.isnan(value) else float(value) for value in iou]) + "\n")


if __name__ == "__main__":
    main()
