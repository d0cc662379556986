"""Evaluator benchmark: bao.evaluate vs the per-class loop evaluator most WSSS repos ship.

    python -m benchmarks.evaluator [--count 500] [--workers 2] [--repeats 3] [--out FILE]

Writes ``count`` VOC-sized (375x500) palette-PNG pairs with 21 classes, then times, in this one
process and interleaved (best of ``repeats``): the loop evaluator (one process, for each class
the sums of pred==k, gt==k and both), merely decoding every pair with ``workers`` workers, and
bao.evaluate with the same workers, in threads and in processes. It checks that the per-class
IoUs are identical and prints the ratios the issue asks for: loop / evaluator (goal >= 5) and
evaluator / decode (goal <= 1.5).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bao.data.palette import IGNORE_INDEX, read_mask
from bao.evaluate import POOLS, decode_pair, evaluate_pairs, map_pairs, pairs_from_dirs
from benchmarks.masks import write_mask_pairs
from benchmarks.system import machine_description, report


def loop_evaluator_iou(pairs, num_classes: int) -> np.ndarray:
    """The straightforward algorithm: per image and per class, count pred==k, gt==k and both."""
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


def timed(function) -> tuple[float, object]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def run(root: Path, count: int, workers: int, repeats: int, num_classes: int = 21) -> dict:
    gt_dir, pred_dir = write_mask_pairs(root, count, num_classes)
    pairs = pairs_from_dirs(pred_dir, gt_dir, None)
    best: dict[str, float] = {}
    loop_iou = fast_iou = None
    for _ in range(repeats):
        seconds, loop_iou = timed(lambda: loop_evaluator_iou(pairs, num_classes))
        best["loop"] = min(best.get("loop", np.inf), seconds)
        for pool in POOLS:
            seconds, _ = timed(lambda: sum(map_pairs(decode_pair, pairs, workers, pool)))
            best[f"decode_{pool}"] = min(best.get(f"decode_{pool}", np.inf), seconds)
            seconds, matrix = timed(lambda: evaluate_pairs(pairs, num_classes, workers, pool))
            best[f"evaluate_{pool}"] = min(best.get(f"evaluate_{pool}", np.inf), seconds)
            fast_iou = matrix.iou()
    identical = bool(np.array_equal(loop_iou, fast_iou, equal_nan=True))
    figures = {"pairs": count, "workers": workers, "repeats": repeats, "identical_per_class_iou": identical}
    figures |= {f"{name}_s": round(value, 4) for name, value in best.items()}
    for pool in POOLS:
        figures[f"speedup_vs_loop_{pool}"] = round(best["loop"] / best[f"evaluate_{pool}"], 2)
        figures[f"evaluate_over_decode_{pool}"] = round(best[f"evaluate_{pool}"] / best[f"decode_{pool}"], 3)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_eval_") as temp:
        figures = run(Path(temp), args.count, args.workers, args.repeats)
    figures["machine"] = machine_description()
    report(figures, args.out)
    if not figures["identical_per_class_iou"]:
        raise SystemExit("per-class IoUs differ from the loop evaluator")


if __name__ == "__main__":
    main()
