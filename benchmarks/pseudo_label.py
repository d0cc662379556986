"""Pseudo-labeling benchmark: batched multi-scale + flip inference vs one image at a time, and memory.

    python -m benchmarks.pseudo_label [--images 24] [--batch-size 8] [--backbone resnet18] [--out FILE]

Runs the real ``bao_pseudo_labels`` (DataLoader decoding, forward passes, PNG writing, scoring)
on generated images of three VOC-like aspect ratios. In this one process, interleaved, best of
``repeats``: images/s with ``--batch-size`` images per forward pass vs 1 (ratio). Then, each in a
fresh process, the peak memory (RSS high-water mark, and tracemalloc's peak of Python/numpy
allocations) for N and 4N images: it must not grow with N.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from bao.config import CrfConfig, ModelConfig, PseudoLabelConfig, RuntimeConfig
from bao.data.manifest import Manifest
from bao.data.palette import save_mask
from bao.infer.pipeline import bao_pseudo_labels
from bao.models import create_bao_net
from bao.runtime import resolve_device
from benchmarks.masks import blob_mask
from benchmarks.system import machine_description, report

SIZES = ((96, 128), (128, 96), (90, 128))  # (H, W): landscape, portrait, wide, as in VOC
NUM_CLASSES = 5


def write_dataset(root: Path, count: int, seed: int = 0) -> Manifest:
    """``count`` images whose coloured blobs follow their masks, and a manifest over them."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    palette = rng.integers(0, 256, (NUM_CLASSES + 1, 3))
    for index in range(count):
        height, width = SIZES[index % len(SIZES)]
        mask = blob_mask(rng, height, width, NUM_CLASSES + 1)
        image = palette[np.where(mask == 255, 0, mask)] + rng.normal(0, 12, (height, width, 3))
        cv2.imwrite(str(root / f"{index:05d}.jpg"), np.clip(image, 0, 255).astype(np.uint8))
        save_mask(root / f"{index:05d}.png", mask)
        present = set(np.unique(mask).tolist()) - {0, 255}
        labels = [int(k + 1 in present) for k in range(NUM_CLASSES)]
        rows.append({"image_id": f"{index:05d}", "split": "train", "image_path": f"{index:05d}.jpg", "mask_path": f"{index:05d}.png", "labels": labels})
    classes = tuple(f"class{k}" for k in range(1, NUM_CLASSES + 1))
    return Manifest(table=pd.DataFrame(rows), classes=classes, root=root)


def pseudo_label_seconds(manifest: Manifest, model, device, batch_size: int, scales, workers: int, out_dir: Path) -> float:
    cfg = PseudoLabelConfig(scales=scales, flip=True, thresholds=(0.5,))
    runtime = RuntimeConfig(loader_workers=workers, inference_batch_size=batch_size)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    crf_off = CrfConfig(enabled=False, iterations=1, gt_prob=0.7, gaussian_sxy=3, gaussian_compat=3, bilateral_sxy=50, bilateral_srgb=5, bilateral_compat=10)
    bao_pseudo_labels(model, manifest, cfg, crf_off, device, out_dir, runtime=runtime)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def build_model(backbone: str, device):
    torch.manual_seed(0)
    return create_bao_net(ModelConfig(backbone=backbone, pretrained=False, output_stride=16), NUM_CLASSES).to(device).eval()


def throughput(args, device) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_pl_") as temp:
        manifest = write_dataset(Path(temp) / "data", args.images)
        model = build_model(args.backbone, device)
        pseudo_label_seconds(manifest, model, device, args.batch_size, args.scales, args.workers, Path(temp) / "warmup")
        best = {1: np.inf, args.batch_size: np.inf}
        for repeat in range(args.repeats):
            for batch_size in best:
                out_dir = Path(temp) / f"out_{batch_size}_{repeat}"
                best[batch_size] = min(best[batch_size], pseudo_label_seconds(manifest, model, device, batch_size, args.scales, args.workers, out_dir))
    one, batched = args.images / best[1], args.images / best[args.batch_size]
    return {"one_at_a_time_images_per_s": round(one, 2), "batched_images_per_s": round(batched, 2), "batched_over_one_at_a_time": round(batched / one, 3)}


def memory_child(args) -> None:
    """In a fresh process: pseudo-label ``args.images`` images and print the peaks as JSON."""
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory(prefix="bench_pl_mem_") as temp:
        manifest = write_dataset(Path(temp) / "data", args.images)
        model = build_model(args.backbone, device)
        out_dir = Path(temp) / "out"
        tracemalloc.start()
        pseudo_label_seconds(manifest, model, device, args.batch_size, args.scales, args.workers, out_dir)
        _, traced_peak = tracemalloc.get_traced_memory()
    figures = {"images": args.images, "rss_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "tracemalloc_peak_mib": traced_peak / 2**20}
    if device.type == "cuda":
        figures["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(figures))


def memory(args) -> dict:
    results = {}
    for count in (args.images, 4 * args.images):
        command = [sys.executable, "-m", "benchmarks.pseudo_label", "--memory-child", "--images", str(count), "--batch-size", str(args.batch_size),
                   "--backbone", args.backbone, "--workers", str(args.workers), "--device", args.device, "--threads", str(torch.get_num_threads()), "--scales", *map(str, args.scales)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[count] = json.loads(output.strip().splitlines()[-1])
    small, large = results[args.images], results[4 * args.images]
    figures = {f"{key}_at_{count}": round(value[key], 1) for count, value in results.items() for key in value if key != "images"}
    figures["rss_peak_4n_over_n"] = round(large["rss_peak_mib"] / small["rss_peak_mib"], 3)
    figures["tracemalloc_peak_4n_over_n"] = round(large["tracemalloc_peak_mib"] / max(small["tracemalloc_peak_mib"], 1e-9), 3)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--scales", type=int, nargs="+", default=[64, 96, 128])
    parser.add_argument("--workers", type=int, default=1, help="DataLoader decoding workers")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args)
        return
    device = resolve_device(args.device)
    figures = {"images": args.images, "batch_size": args.batch_size, "backbone": args.backbone, "scales": args.scales, "device": str(device)}
    figures |= throughput(args, device)
    if not args.skip_memory:
        figures |= memory(args)
    figures["machine"] = machine_description()
    report(figures, args.out)


if __name__ == "__main__":
    main()
