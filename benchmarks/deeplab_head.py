"""DeepLab training-step benchmark: ASPP's atrous branches as full dilated 3x3 convolutions against
``bao.models.deeplab.CentreTapConv2d``, which reads only the centre tap on a map no larger than
its dilation (every other tap lands in the zero padding).

    python -m benchmarks.deeplab_head [--backbone tf_efficientnet_lite0] [--size 96] [--batch 16] [--out FILE]

One DeepLabV3 (random weights), and a copy whose atrous branches are plain ``nn.Conv2d`` with the
same weights, each take forward + backward steps on the same random batch, interleaved in this
one process, best of ``repeats`` (the first step of each, with the same dropout draws, is the
warm-up and the comparison). ``centre_tap_over_full`` is the ratio of their
images/s; ``max_relative_difference`` compares their logits and ``max_gradient_difference`` the
atrous weights' gradients: the shortcut must not change either.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch import nn

from bao.models import create_deeplab
from bao.models.deeplab import CentreTapConv2d
from benchmarks.system import add_run_arguments, machine_description, parse_run_arguments, report

NUM_CLASSES = 21


def with_full_convolutions(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose centre-tap convolutions are plain ``nn.Conv2d`` again."""
    full = copy.deepcopy(model)
    for module in full.modules():
        if isinstance(module, CentreTapConv2d):
            module.__class__ = nn.Conv2d  # same parameters, the full convolution's forward
    return full


def step(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    logits = model(images)
    logits.square().mean().backward()
    return logits.detach()


def seconds_per_step(model: nn.Module, images: torch.Tensor) -> float:
    start = time.perf_counter()
    step(model, images)
    return time.perf_counter() - start


def atrous_gradients(model: nn.Module) -> torch.Tensor:
    return torch.cat([branch[0].weight.grad.flatten() for branch in model.head[0].convs[1:4]]).clone()


def measure(args) -> dict:
    torch.manual_seed(0)
    fast = create_deeplab(args.backbone, NUM_CLASSES, pretrained=False, output_stride=16).train()
    full = with_full_convolutions(fast)
    images = torch.randn(args.batch, 3, args.size, args.size)
    outputs = {}
    for name, model in (("full", full), ("centre_tap", fast)):  # the first step of each, with the same dropout draws
        torch.manual_seed(1)
        outputs[name] = (step(model, images), atrous_gradients(model))
    variants = {"full": full, "centre_tap": fast}
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(args.repeats):
        for name, model in variants.items():
            best[name] = min(best[name], seconds_per_step(model, images))
    (reference, reference_gradients), (logits, gradients) = outputs["full"], outputs["centre_tap"]
    scale = max(reference.abs().max().item(), 1e-6)
    feature_side = fast.backbone(images).shape[-1]
    return {
        "backbone": args.backbone, "size": args.size, "batch": args.batch, "feature_side": feature_side,
        "atrous_rates": [branch[0].dilation[0] for branch in fast.head[0].convs[1:4]],
        "full_images_per_s": round(args.batch / best["full"], 2),
        "centre_tap_images_per_s": round(args.batch / best["centre_tap"], 2),
        "centre_tap_over_full": round(best["full"] / best["centre_tap"], 3),
        "max_relative_difference": float((logits - reference).abs().max().item() / scale),
        "max_gradient_difference": float((gradients - reference_gradients).abs().max().item()),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    return add_run_arguments(parser)


def main() -> None:
    args = parse_run_arguments(build_parser())
    report(measure(args) | {"machine": machine_description()}, args.out)


if __name__ == "__main__":
    main()
