"""The GPU check behind ``benchmarks/gpu_check.sh``: a short smoke run of every stage on CUDA,
``torchrun`` on one GPU, and the three benchmarks, with figures written to ``$OUT``.

Each part has its own time limit, so the whole stays under 8 minutes; a part that fails or runs
out of time is recorded as such and the next part still runs. For each training stage it reports
images/s and the fraction of time waiting for data (from the engine's log line of the last epoch)
and MFU: that throughput times the stage model's FLOPs per training image (counted at the stage's
crop size, see ``benchmarks.flops``) over the datasheet bf16 peak and over a measured matmul peak.
``--cpu --tiny`` is the smallest rehearsal of every part; the test suite runs it.
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

from bao.config import Params, load_params
from bao.losses import classification_loss, segmentation_loss
from bao.models import create_bao_net, create_cam_net
from bao.models.deeplab import create_deeplab
from bao.train.bao import bao_losses, make_teacher
from benchmarks.flops import device_peaks, training_step_flops, utilisation

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
# --cpu --tiny: the least that still runs every part (about two minutes on two idle cores): the pipeline
# up to train_bao only (every stage runs end to end in tests/test_pipeline_e2e.py) and torchrun on train_cam.
TINY_OVERRIDES = {
    "device": "cpu",
    "data": {"synthetic": {"num_train": 8, "num_val": 4, "image_size": 32, "num_classes": 2}},
    "train_cam": {"epochs": 1, "batch_size": 4, "crop_size": 32, "resize_long": [28, 36]},
    "bao": {"epochs": 1, "batch_size": 4, "crop_size": 32, "resize_long": [28, 36]},
    "pseudo_label": {"scales": [32], "thresholds": [0.5]},
    "train_seg": {"epochs": 1, "batch_size": 4, "crop_size": 32, "resize_long": [28, 36]},
    "report": {"gallery_size": 1},
}
# The benchmarks' options per mode: (train_step, pseudo_label, evaluator) arguments.
BENCHMARK_OPTIONS = {
    "gpu": (["--size", "256", "--batch", "32", "--steps", "10"],
            ["--images", "64", "--workers", "4", "--scales", "192", "256", "320"],
            ["--count", "500", "--repeats", "1"]),
    "cpu": (["--size", "64", "--batch", "4", "--steps", "2", "--threads", "1"],
            ["--images", "6", "--workers", "0", "--scales", "48", "64", "--threads", "1"],
            ["--count", "200", "--repeats", "2"]),
    "tiny": (["--size", "32", "--batch", "2", "--steps", "1", "--repeats", "1", "--threads", "1"],
             ["--images", "2", "--batch-size", "2", "--workers", "0", "--scales", "32", "--repeats", "1", "--skip-memory", "--threads", "1"],
             ["--count", "4", "--repeats", "1"]),
}
PIPELINE_TARGETS = {"gpu": [], "cpu": [], "tiny": ["train_bao"]}
TORCHRUN_STAGE = {"gpu": "stages.train_seg", "cpu": "stages.train_seg", "tiny": "stages.train_cam"}
TRAINING_SECTIONS = {"train_cam": "train_cam", "train_bao": "bao", "train_seg": "train_seg"}
EPOCH_LINE = re.compile(r"\[(\w+)\] (\w+) epoch (\d+): ([\d.]+) images/s, (\d+)% of the time waiting for data")


def run_part(name: str, command: list[str], cwd: Path, *, limit: int, out_dir: Path, figures: dict) -> str:
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


def benchmark_part(name: str, module: str, extra: list[str], *, limit: int, out_dir: Path, figures: dict) -> None:
    result_file = out_dir / f"{name}.json"
    run_part(name, [sys.executable, "-m", module, *extra, "--out", str(result_file)], REPO, limit=limit, out_dir=out_dir, figures=figures)
    if result_file.is_file():
        figures[name]["figures"] = json.loads(result_file.read_text())


def stage_flops_per_image(params: Params, stage: str, num_classes: int) -> float:
    """Model FLOPs of one training image of ``stage`` (forward + backward; BAO adds its teacher's
    forward pass), at the stage's crop size, counted on CPU with a batch of two."""
    crop = getattr(params, TRAINING_SECTIONS[stage]).crop_size
    images = torch.randn(2, 3, crop, crop)
    labels = torch.zeros(2, num_classes)
    labels[:, 0] = 1.0
    torch.manual_seed(0)
    if stage == "train_cam":
        model = create_cam_net(params.model.without_initial_weights(), num_classes).train()
        flops = training_step_flops(lambda: classification_loss(model(images)["logits"], labels))
    elif stage == "train_bao":
        model_cfg = params.model.without_initial_weights()
        student = create_bao_net(model_cfg, num_classes, use_label_encoder=params.bao.label_encoder).train()
        teacher, _ = make_teacher(student, params.bao, 1)

        def step() -> torch.Tensor:
            with torch.no_grad():
                teacher_cams = teacher(images, refine=True)["cams"]
            return sum(bao_losses(student(images, labels, refine=True), teacher_cams, labels, params.bao, epoch=1).values())

        flops = training_step_flops(step)
    else:
        cfg = params.train_seg
        model = create_deeplab(cfg.backbone, num_classes + 1, False, cfg.output_stride).train()
        masks = torch.zeros(2, crop, crop, dtype=torch.long)
        flops = training_step_flops(lambda: segmentation_loss(model(images), masks))
    return flops / 2


def add_stage_mfu(stages: dict, params: Params, num_classes: int, peaks: dict) -> None:
    """Each logged training stage gains its FLOPs per image, achieved TFLOP/s and MFU."""
    named = {"datasheet_bf16": peaks["datasheet_dense_bf16_flops_per_s"], "measured_matmul": peaks["measured_matmul_flops_per_s"]}
    for stage, figures in stages.items():
        if stage in TRAINING_SECTIONS:
            flops = stage_flops_per_image(params, stage, num_classes)
            figures["model_gflops_per_image"] = round(flops / 1e9, 4)
            figures |= utilisation(flops, figures["images_per_s"], named)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="run the same parts on CPU with small sizes (even where CUDA is present)")
    parser.add_argument("--tiny", action="store_true", help="with --cpu: the smallest sizes that still run every part (the smoke test)")
    args = parser.parse_args()
    if args.tiny and not args.cpu:
        parser.error("--tiny is a CPU rehearsal: pass --cpu --tiny")
    cuda = torch.cuda.is_available() and not args.cpu
    if not cuda and not args.cpu:
        raise SystemExit("gpu_check: no CUDA device visible to torch (torch.cuda.is_available() is False); "
                         "run it on a GPU machine, or pass --cpu for a tiny CPU rehearsal")
    out_dir = Path(os.environ.get("OUT") or tempfile.mkdtemp(prefix="gpu_check_"))
    out_dir.mkdir(parents=True, exist_ok=True)
    figures: dict = {"machine": machine_description(), "cuda": cuda}
    device = "cuda" if cuda else "cpu"
    mode = "gpu" if cuda else "tiny" if args.tiny else "cpu"
    overrides = {"gpu": GPU_OVERRIDES, "cpu": CPU_OVERRIDES, "tiny": TINY_OVERRIDES}[mode]
    limits = {"gpu": (190, 50, 70, 90, 60), "cpu": (900, 300, 300, 300, 300), "tiny": (300, 120, 120, 120, 120)}[mode]
    dvc = [sys.executable, "-m", "dvc"]  # this interpreter's dvc, not whatever `dvc` is first on PATH
    with tempfile.TemporaryDirectory(prefix="gpu_check_repo_") as temp:
        repo = make_repo_copy(Path(temp), overrides)
        params = load_params(repo / "params.yaml")
        if cuda:
            (repo / "runtime.yaml").write_text(GPU_RUNTIME)
        log = run_part("pipeline", [*dvc, "repro", *PIPELINE_TARGETS[mode]], repo, limit=limits[0], out_dir=out_dir, figures=figures)
        figures["pipeline"]["stages"] = epoch_figures(log)
        for name in ("metrics/pseudo_label.json", "metrics/evaluate.json"):
            if (repo / name).is_file():
                figures["pipeline"][name] = json.loads((repo / name).read_text())
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m", TORCHRUN_STAGE[mode],
                    *stage_argv(repo, TORCHRUN_STAGE[mode].removeprefix("stages."))]
        torchrun_log = run_part("torchrun", torchrun, repo, limit=limits[1], out_dir=out_dir, figures=figures)
        figures["torchrun"]["stages"] = epoch_figures(torchrun_log)
    train_step, pseudo_label, evaluator = BENCHMARK_OPTIONS[mode]
    benchmark_part("train_step", "benchmarks.train_step", ["--device", device, *train_step], limit=limits[2], out_dir=out_dir, figures=figures)
    benchmark_part("pseudo_label", "benchmarks.pseudo_label", ["--device", device, *pseudo_label], limit=limits[3], out_dir=out_dir, figures=figures)
    workers = str(min(8, os.cpu_count() or 1))
    benchmark_part("evaluator", "benchmarks.evaluator", ["--workers", workers, *evaluator], limit=limits[4], out_dir=out_dir, figures=figures)
    # last, so the measured matmul peak's memory is not held while the parts above run
    peaks = device_peaks(torch.device(device))
    figures["peaks"] = peaks
    num_classes = params.data.synthetic.num_classes
    for part in ("pipeline", "torchrun"):
        add_stage_mfu(figures[part]["stages"], params, num_classes, peaks)
    figures["summary"] = summary(figures)
    (out_dir / "gpu_check.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    failed = [name for name, value in figures.items() if isinstance(value, dict) and str(value.get("status", "ok")) != "ok"]
    if failed:
        raise SystemExit(f"gpu_check: parts not ok: {failed} (logs in {out_dir})")


def summary(figures: dict) -> dict:
    """Throughput, MFU and data-wait fraction of every training stage and of the train_step benchmark, side by side."""
    rows = {}
    keys = ("images_per_s", "data_wait_fraction", "achieved_tflops_per_s", "mfu_vs_datasheet_bf16", "mfu_vs_measured_matmul")
    for part in ("pipeline", "torchrun"):
        for stage, values in figures[part].get("stages", {}).items():
            rows[f"{part}.{stage}"] = {key: values.get(key) for key in keys}
    bench = figures.get("train_step", {}).get("figures", {})
    for variant in ("fp32", "amp", "channels_last", "amp_channels_last"):
        if f"{variant}_images_per_s" in bench:
            rows[f"train_step.{variant}"] = {key: bench.get(f"{variant}_{key}") for key in keys}
    return rows


if __name__ == "__main__":
    main()
