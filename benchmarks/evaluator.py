"""Evaluator benchmark: bao.evaluate vs the per-class loop evaluator most WSSS repos ship.

    python -m benchmarks.evaluator [--count 1000] [--workers 2] [--repeats 3] [--out FILE]

Writes ``count`` VOC-sized (375x500) palette-PNG pairs with 21 classes, then times, in this one
process and interleaved (best of ``repeats``): the loop evaluator (one process, for each class
the sums of pred==k, gt==k and both), merely decoding every pair with ``workers`` workers, and
bao.evaluate with the same workers, in threads and in processes. It checks that the per-class
IoUs are identical and prints the ratios the issue asks for: loop / evaluator (goal >= 5) and
evaluator / decode (goal <= 1.5).

Then the same comparison as a user meets it, process start included: ``python -m bao.evaluate``
(which does not import torch) against ``python -m benchmarks.loop_evaluator``, each a fresh
subprocess, interleaved, best of ``repeats``: wall seconds (goal >= 5x) and CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bao.evaluate import POOLS, evaluate_pairs, load_pair, map_pairs, pairs_from_dirs
from benchmarks.loop_evaluator import loop_evaluator_iou
from benchmarks.masks import write_mask_pairs
from benchmarks.system import machine_description, report


def timed(function) -> tuple[float, object]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def decode_pair(pair: tuple[Path, Path]) -> int:
    """Decoding alone, the floor an evaluator is measured against."""
    gt, pred = load_pair(pair)
    return gt.size


def command_seconds(command: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system, all its threads) of one fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def cli_comparison(gt_dir: Path, pred_dir: Path, out_dir: Path, *, num_classes: int, workers: int, repeats: int) -> dict:
    """Both evaluators as fresh processes (interpreter start and imports included), best of ``repeats``."""
    common = ["--pred", str(pred_dir), "--gt", str(gt_dir), "--num-classes", str(num_classes)]
    commands = {
        "cli_loop": [sys.executable, "-m", "benchmarks.loop_evaluator", *common, "--out", str(out_dir / "loop.json")],
        "cli_evaluate": [sys.executable, "-m", "bao.evaluate", *common, "--workers", str(workers), "--out", str(out_dir / "evaluate.json")],
        "cli_python_start": [sys.executable, "-c", "pass"],
    }
    best = {name: np.inf for name in commands}
    best_cpu = {name: np.inf for name in commands}
    for _ in range(repeats):
        for name, command in commands.items():
            wall, cpu = command_seconds(command)
            best[name], best_cpu[name] = min(best[name], wall), min(best_cpu[name], cpu)
    loop_iou = json.loads((out_dir / "loop.json").read_text())
    fast_iou = list(json.loads((out_dir / "evaluate.json").read_text())["per_class_iou"].values())
    figures = {f"{name}_s": round(value, 4) for name, value in best.items()}
    figures |= {f"{name}_cpu_s": round(value, 4) for name, value in best_cpu.items()}
    figures["cli_identical_per_class_iou"] = bool(np.array_equal(np.array(loop_iou, float), np.array(fast_iou, float), equal_nan=True))
    figures["cli_speedup_vs_loop"] = round(best["cli_loop"] / best["cli_evaluate"], 2)
    # CPU seconds do not depend on how busy a shared machine is; with several workers they add up
    figures["cli_cpu_ratio_vs_loop"] = round(best_cpu["cli_loop"] / best_cpu["cli_evaluate"], 2)
    return figures


def run(root: Path, count: int, workers: int, repeats: int, *, num_classes: int = 21) -> dict:
    gt_dir, pred_dir = write_mask_pairs(root, count, num_classes)
    pairs = pairs_from_dirs(pred_dir, gt_dir, None)
    best: dict[str, float] = {}
    loop_iou, pool_iou = None, {}
    for _ in range(repeats):
        seconds, loop_iou = timed(lambda: loop_evaluator_iou(pairs, num_classes))
        best["loop"] = min(best.get("loop", np.inf), seconds)
        for pool in POOLS:
            seconds, _ = timed(lambda: sum(map_pairs(decode_pair, pairs, workers, pool)))
            best[f"decode_{pool}"] = min(best.get(f"decode_{pool}", np.inf), seconds)
            seconds, matrix = timed(lambda: evaluate_pairs(pairs, num_classes, workers, pool))
            best[f"evaluate_{pool}"] = min(best.get(f"evaluate_{pool}", np.inf), seconds)
            pool_iou[pool] = matrix.iou()
    figures = {"pairs": count, "workers": workers, "repeats": repeats}
    for pool in POOLS:  # every pool's result against the loop's, not only the last one's
        figures[f"identical_per_class_iou_{pool}"] = bool(np.array_equal(loop_iou, pool_iou[pool], equal_nan=True))
    figures["identical_per_class_iou"] = all(figures[f"identical_per_class_iou_{pool}"] for pool in POOLS)
    figures |= {f"{name}_s": round(value, 4) for name, value in best.items()}
    for pool in POOLS:
        figures[f"speedup_vs_loop_{pool}"] = round(best["loop"] / best[f"evaluate_{pool}"], 2)
        figures[f"evaluate_over_decode_{pool}"] = round(best[f"evaluate_{pool}"] / best[f"decode_{pool}"], 3)
    return figures | cli_comparison(gt_dir, pred_dir, root, num_classes=num_classes, workers=workers, repeats=repeats)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_eval_") as temp:
        figures = run(Path(temp), args.count, args.workers, args.repeats)
    figures["machine"] = machine_description()
    report(figures, args.out)
    if not (figures["identical_per_class_iou"] and figures["cli_identical_per_class_iou"]):
        raise SystemExit("per-class IoUs differ from the loop evaluator")


if __name__ == "__main__":
    main()
