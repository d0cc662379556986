"""Inference benchmark: the CAM network's forward pass as the pipeline runs it (BatchNorm folded,
channels_last) against the plain eval-mode network.

    python -m benchmarks.inference [--backbone tf_efficientnet_lite0] [--sizes 96 144 192] [--batch 8] [--out FILE]

At each square input size, four variants of one randomly initialised CAM network (BatchNorm
statistics from a few training-mode passes, so folding has something to fold) run ``--batch``
random images per pass, interleaved in this one process, best of ``repeats`` after a warm-up:
``plain`` (NCHW, BatchNorm as is), ``channels_last``, ``folded`` (``bao.models.fold``) and
``folded_channels_last`` (the runtime defaults). Ratios are against ``plain``, and
``max_relative_difference`` says how far each variant's CAMs are from plain's (relative to their
largest magnitude): folding must not change the result.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from bao.config import ModelConfig
from bao.models import create_cam_net
from bao.models.fold import folded_for_inference
from benchmarks.system import add_run_arguments, machine_description, parse_run_arguments, report

VARIANTS = ("plain", "channels_last", "folded", "folded_channels_last")
NUM_CLASSES = 20


def build_variants(backbone: str, size: int, batch: int) -> tuple[dict[str, torch.nn.Module], dict[str, torch.Tensor]]:
    """(the four variants, each variant's input batch: the same images, NHWC for the channels_last ones)."""
    torch.manual_seed(0)
    model = create_cam_net(ModelConfig(backbone=backbone, pretrained=False, output_stride=16), NUM_CLASSES)
    model.train()
    with torch.no_grad():  # running statistics that are not the initial (0, 1)
        for _ in range(3):
            model(torch.randn(batch, 3, size, size), refine=True)
    model.eval()
    images = torch.randn(batch, 3, size, size)
    nhwc_images = images.contiguous(memory_format=torch.channels_last)
    variants = {
        "plain": model,
        "channels_last": copy.deepcopy(model).to(memory_format=torch.channels_last),
        "folded": folded_for_inference(model, lambda net: net(images, refine=True), channels_last=False),
        "folded_channels_last": folded_for_inference(model, lambda net: net(nhwc_images, refine=True), channels_last=True),
    }
    return variants, {name: nhwc_images if name.endswith("channels_last") else images for name in VARIANTS}


def seconds_per_pass(net: torch.nn.Module, images: torch.Tensor) -> float:
    start = time.perf_counter()
    net(images, refine=True)
    return time.perf_counter() - start


@torch.no_grad()
def measure(args) -> dict:
    figures: dict = {"backbone": args.backbone, "batch": args.batch}
    for size in args.sizes:
        variants, inputs = build_variants(args.backbone, size, args.batch)
        reference = variants["plain"](inputs["plain"], refine=True)["cams"]
        scale = max(reference.abs().max().item(), 1e-6)
        best = dict.fromkeys(VARIANTS, float("inf"))
        for name in VARIANTS:  # warm-up
            seconds_per_pass(variants[name], inputs[name])
        for _ in range(args.repeats):
            for name in VARIANTS:
                best[name] = min(best[name], seconds_per_pass(variants[name], inputs[name]))
        for name in VARIANTS:
            cams = variants[name](inputs[name], refine=True)["cams"]
            figures[f"{size}px_{name}_images_per_s"] = round(args.batch / best[name], 2)
            figures[f"{size}px_{name}_max_relative_difference"] = float((cams - reference).abs().max().item() / scale)
        for name in VARIANTS[1:]:
            figures[f"{size}px_{name}_over_plain"] = round(best["plain"] / best[name], 3)
        figures[f"{size}px_folded_is_a_copy"] = variants["folded"] is not variants["plain"]
    return figures


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--sizes", type=int, nargs="+", default=[96, 144, 192])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    return add_run_arguments(parser)


def main() -> None:
    args = parse_run_arguments(build_parser())
    report(measure(args) | {"machine": machine_description()}, args.out)


if __name__ == "__main__":
    main()
