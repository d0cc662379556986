"""Pseudo-labeling benchmark: batched multi-scale + flip inference vs one image at a time, and memory.

    python -m benchmarks.pseudo_label [--images 24] [--batch-size 8] [--backbone resnet18] [--out FILE]

Runs the real ``bao_pseudo_labels`` (DataLoader decoding, forward passes, PNG writing, scoring)
on generated images of three VOC-like aspect ratios. In this one process, interleaved, best of
``repeats`` after a warm-up run of each side: images/s with ``--batch-size`` images per forward
pass vs 1 (ratio), and whether both wrote byte-identical label PNGs (``identical_labels``).

Then memory, for N and 4N images, each in a fresh process that pseudo-labels its images twice
and measures the second run (the first pays one-time costs: kernel caches, thread arenas). From
/proc/self/status (Linux; glibc for malloc_trim): the resident set size (RSS) just before the
run, its peak during the run (the kernel's high-water mark, reset just before; a 2 ms sampler
thread where the reset is refused, ``rss_peak_exact`` false) and the RSS after it, with malloc's
free pages handed back to the OS before "before" and "after". Growth (peak - before) and
retained (after - before) are what the run itself adds, so the ~0.9 GB that torch and the model
hold before it cannot hide a leak. A leak of L MiB per image makes the figure at 4N exceed the
one at N by 3N x L, so ``*_per_extra_image_mib`` = (4N figure - N figure) / 3N estimates L
(ideally 0). The retained one is the leak test; the peak differs by up to ~15 MiB between
otherwise equal processes (the allocator's layout), i.e. up to ~0.2 MiB per extra image at N =
24. Decoding workers (``--workers`` > 0) are other processes, not counted. On CUDA the same for
``torch.cuda`` allocated memory.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
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
from benchmarks.system import add_run_arguments, machine_description, parse_run_arguments, report

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


def pseudo_label_seconds(manifest: Manifest, model, device, *, batch_size: int, scales, workers: int, out_dir: Path) -> float:
    cfg = PseudoLabelConfig(scales=scales, flip=True, thresholds=(0.5,))
    runtime = RuntimeConfig(loader_workers=workers, inference_batch_size=batch_size)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    crf_off = CrfConfig(enabled=False, iterations=1, gt_prob=0.7, gaussian_sxy=3, gaussian_compat=3, bilateral_sxy=50, bilateral_srgb=5, bilateral_compat=10)
    bao_pseudo_labels(model, manifest, cfg, crf=crf_off, device=device, out_dir=out_dir, runtime=runtime)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def build_model(backbone: str, device):
    torch.manual_seed(0)
    return create_bao_net(ModelConfig(backbone=backbone, pretrained=False, output_stride=16), NUM_CLASSES).to(device).eval()


def label_pngs(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.glob("*.png"))}


def throughput(args, device) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_pl_") as temp:
        manifest = write_dataset(Path(temp) / "data", args.images)
        model = build_model(args.backbone, device)
        best = {1: np.inf, args.batch_size: np.inf}
        for batch_size in best:  # warm-up of each side, so neither is timed cold
            pseudo_label_seconds(manifest, model, device, batch_size=batch_size, scales=args.scales, workers=args.workers, out_dir=Path(temp) / f"warmup_{batch_size}")
        outputs = []
        for repeat in range(args.repeats):
            for batch_size in best:
                out_dir = Path(temp) / f"out_{batch_size}_{repeat}"
                best[batch_size] = min(best[batch_size], pseudo_label_seconds(manifest, model, device, batch_size=batch_size, scales=args.scales, workers=args.workers, out_dir=out_dir))
                outputs.append(out_dir)
        reference = label_pngs(outputs[0])  # one at a time, first repeat
        identical = len(reference) == args.images and all(label_pngs(out_dir) == reference for out_dir in outputs[1:])
    one, batched = args.images / best[1], args.images / best[args.batch_size]
    return {"one_at_a_time_images_per_s": round(one, 2), "batched_images_per_s": round(batched, 2), "batched_over_one_at_a_time": round(batched / one, 3),
            "identical_labels": identical}


def status_kib(field: str) -> int:
    """A memory field of /proc/self/status (Linux), in KiB: VmRSS (resident now), VmHWM (its peak)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def release_free_memory() -> None:
    """Collect garbage and hand the allocator's free pages back to the OS (glibc's malloc_trim), so
    resident memory is the memory still in use: a leak cannot hide in freed pages malloc kept."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM) to the current RSS; False where refused."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


class PeakDuring:
    """RSS just before a ``with`` block and its peak during it (KiB). The peak is the kernel's
    high-water mark, reset on entry (``5`` into /proc/self/clear_refs, Linux >= 4.0); where that
    reset is refused, a thread samples RSS every ``interval_s`` instead (``exact`` says which)."""

    def __init__(self, interval_s: float = 0.002):
        self.interval_s, self._stop, self._thread = interval_s, threading.Event(), None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, status_kib("VmRSS"))

    def __enter__(self) -> PeakDuring:
        self.before = self.peak = status_kib("VmRSS")
        self.exact = reset_peak_rss()
        if not self.exact:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        self.peak = max(self.peak, status_kib("VmHWM") if self.exact else status_kib("VmRSS"))


def memory_child(args) -> None:
    """In a fresh process: pseudo-label ``args.images`` images twice (the first run a warm-up) and
    print the second run's memory growth, at its peak and retained afterwards, as JSON (MiB)."""
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory(prefix="bench_pl_mem_") as temp:
        manifest = write_dataset(Path(temp) / "data", args.images)
        model = build_model(args.backbone, device)
        run = partial(pseudo_label_seconds, model=model, device=device, batch_size=args.batch_size, scales=args.scales, workers=args.workers)
        run(manifest, out_dir=Path(temp) / "warmup")  # one-time costs (kernel caches, thread arenas) before "before"
        release_free_memory()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            cuda_before = torch.cuda.memory_allocated()
        with PeakDuring() as rss:
            run(manifest, out_dir=Path(temp) / "out")
        release_free_memory()
        figures = {"images": args.images, "rss_peak_exact": rss.exact, "rss_before_mib": rss.before / 1024, "rss_growth_mib": (rss.peak - rss.before) / 1024,
                   "rss_retained_mib": (status_kib("VmRSS") - rss.before) / 1024}
        if device.type == "cuda":
            figures["cuda_growth_mib"] = (torch.cuda.max_memory_allocated() - cuda_before) / 2**20
            figures["cuda_retained_mib"] = (torch.cuda.memory_allocated() - cuda_before) / 2**20
    print(json.dumps(figures))


def memory(args) -> dict:
    """Memory growth at N and 4N images, each in a fresh process, and per extra image: (4N - N) / 3N."""
    results = {}
    for count in (args.images, 4 * args.images):
        command = [sys.executable, "-m", "benchmarks.pseudo_label", "--memory-child", "--images", str(count), "--batch-size", str(args.batch_size),
                   "--backbone", args.backbone, "--workers", str(args.workers), "--device", args.device, "--threads", str(torch.get_num_threads()), "--scales", *map(str, args.scales)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[count] = json.loads(output.strip().splitlines()[-1])
    small, large = results[args.images], results[4 * args.images]
    figures = {"memory_n": args.images, "rss_peak_exact": small["rss_peak_exact"] and large["rss_peak_exact"], "rss_before_mib_at_n": round(small["rss_before_mib"], 1)}
    for key in ("rss_growth_mib", "rss_retained_mib", "cuda_growth_mib", "cuda_retained_mib"):
        if key in small:
            figures[f"{key}_at_n"], figures[f"{key}_at_4n"] = round(small[key], 2), round(large[key], 2)
            figures[key.removesuffix("_mib") + "_per_extra_image_mib"] = round((large[key] - small[key]) / (3 * args.images), 4)
    return figures


def build_parser() -> argparse.ArgumentParser:
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
    return add_run_arguments(parser)


def main() -> None:
    args = parse_run_arguments(build_parser())
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
