"""The GPU check behind ``benchmarks/gpu_check.sh``: a short smoke run of every stage on CUDA,
``torchrun`` on one GPU, and the three benchmarks, with figures written to ``$OUT``.

Each part has its own time limit, so the whole stays under 8 minutes; a part that fails or runs
out of time is recorded as such and the next part still runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from pipeline_utils import make_repo_copy, stage_argv  # noqa: E402

from benchmarks.system import machine_description  # noqa: E402

GPU_OVERRIDES = {
    "device": "cuda",
    "data": {"synthetic": {"num_train": 96, "num_val": 32, "image_size": 128, "num_classes": 4}},
    "train_cam": {"epochs": 2, "batch_size": 16, "crop_size": 128, "resize_long": [112, 144]},
    "bao": {"epochs": 2, "batch_size": 16, "crop_size": 128, "resize_long": [112, 144]},
    "pseudo_label": {"scales": [96, 128, 192], "thresholds": [0.1, 0.3, 0.5, 0.7, 0.9]},
    "train_seg": {"epochs": 2, "batch_size": 16, "crop_size": 128, "resize_long": [112, 144]},
}
GPU_RUNTIME = "loader_workers: 4\ninference_batch_size: 8\nio_threads: 4\n"  # runtime.yaml of the GPU run
CPU_OVERRIDES = {
    "device": "cpu",
    "data": {"synthetic": {"num_train": 16, "num_val": 8, "image_size": 64, "num_classes": 3}},
    "train_cam": {"epochs": 1, "batch_size": 8, "crop_size": 64, "resize_long": [56, 72]},
    "bao": {"epochs": 1, "batch_size": 8, "crop_size": 64, "resize_long": [56, 72]},
    "pseudo_label": {"scales": [48, 64], "thresholds": [0.3, 0.5]},
    "train_seg": {"epochs": 1, "batch_size": 8, "crop_size": 64, "resize_long": [56, 72]},
}
EPOCH_LINE = re.compile(r"\[(\w+)\] (\w+) epoch (\d+): ([\d.]+) images/s, (\d+)% of the time waiting for data")


def run_part(name: str, command: list[str], cwd: Path, limit: int, out_dir: Path, figures: dict) -> str:
    """Run one part under ``limit`` seconds; keep its log in ``out_dir``; record status and seconds."""
    start = time.perf_counter()
    try:
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=limit)
        status, output = ("ok" if result.returncode == 0 else f"failed ({result.returncode})"), result.stdout + result.stderr
    except subprocess.TimeoutExpired as error:
        status = f"timed out after {limit} s"
        output = (error.stdout or b"").decode(errors="replace") + (error.stderr or b"").decode(errors="replace")
    (out_dir / f"{name}.log").write_text(output)
    figures[name] = {"status": status, "seconds": round(time.perf_counter() - start, 1)}
    print(f"{name}: {status} in {figures[name]['seconds']} s", flush=True)
    return output


def epoch_figures(log: str) -> dict:
    """Images/s and data-wait fraction of each training stage's last epoch, from the engine's log lines."""
    stages = {}
    for stage, _, epoch, images_per_s, waiting in EPOCH_LINE.findall(log):
        stages[stage] = {"last_epoch": int(epoch), "images_per_s": float(images_per_s), "data_wait_fraction": int(waiting) / 100}
    return stages


def benchmark_part(name: str, module: str, extra: list[str], limit: int, out_dir: Path, figures: dict) -> None:
    result_file = out_dir / f"{name}.json"
    run_part(name, [sys.executable, "-m", module, *extra, "--out", str(result_file)], REPO, limit, out_dir, figures)
    if result_file.is_file():
        figures[name]["figures"] = json.loads(result_file.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="no CUDA: run the same parts on CPU with tiny sizes")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    if not cuda and not args.cpu:
        raise SystemExit("gpu_check: no CUDA device visible to torch (torch.cuda.is_available() is False); "
                         "run it on a GPU machine, or pass --cpu for a tiny CPU rehearsal")
    out_dir = Path(os.environ.get("OUT") or tempfile.mkdtemp(prefix="gpu_check_"))
    out_dir.mkdir(parents=True, exist_ok=True)
    figures: dict = {"machine": machine_description(), "cuda": cuda}
    device = "cuda" if cuda else "cpu"
    with tempfile.TemporaryDirectory(prefix="gpu_check_repo_") as temp:
        repo = make_repo_copy(Path(temp), GPU_OVERRIDES if cuda else CPU_OVERRIDES)
        if cuda:
            (repo / "runtime.yaml").write_text(GPU_RUNTIME)
        log = run_part("pipeline", ["dvc", "repro"], repo, 240 if cuda else 600, out_dir, figures)
        figures["pipeline"]["stages"] = epoch_figures(log)
        for name in ("metrics/pseudo_label.json", "metrics/evaluate.json"):
            if (repo / name).is_file():
                figures["pipeline"][name] = json.loads((repo / name).read_text())
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m", "stages.train_seg", *stage_argv(repo, "train_seg")]
        torchrun_log = run_part("torchrun", torchrun, repo, 60 if cuda else 300, out_dir, figures)
        figures["torchrun"]["stages"] = epoch_figures(torchrun_log)
    size, batch, steps = (256, 32, 10) if cuda else (64, 4, 2)
    benchmark_part("train_step", "benchmarks.train_step", ["--device", device, "--size", str(size), "--batch", str(batch), "--steps", str(steps)], 60 if cuda else 600, out_dir, figures)
    scales = ["192", "256", "320"] if cuda else ["48", "64"]
    images = "64" if cuda else "6"
    benchmark_part("pseudo_label", "benchmarks.pseudo_label", ["--device", device, "--images", images, "--workers", "4" if cuda else "0", "--scales", *scales], 90 if cuda else 600, out_dir, figures)
    benchmark_part("evaluator", "benchmarks.evaluator", ["--workers", str(min(8, os.cpu_count() or 1)), "--repeats", "2"], 60 if cuda else 600, out_dir, figures)
    (out_dir / "gpu_check.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    failed = [name for name, value in figures.items() if isinstance(value, dict) and str(value.get("status", "ok")) != "ok"]
    if failed:
        raise SystemExit(f"gpu_check: parts not ok: {failed} (logs in {out_dir})")


if __name__ == "__main__":
    main()
