"""Training-step benchmark: images/s at fp32 vs mixed precision vs channels_last, through the real engine.

    python -m benchmarks.train_step [--backbone resnet18] [--size 64] [--batch 4] [--steps 3] [--device cpu] [--out FILE]

Each variant trains the CAM network for two short epochs of random batches through
``bao.train.engine.train_loop``; the second (warm) epoch's images/s is kept, best of
``repeats``, variants interleaved in this one process. Ratios are against fp32.
On CUDA, "amp" is the engine's mixed precision (bf16 where supported, else fp16 + GradScaler).
On CPU the pipeline always trains in fp32; "amp" there is bf16 autocast on CPU, measured only to
show whether it would help on this CPU (it needs AVX512-BF16/AMX to be faster).
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import torch

from bao.config import ModelConfig, RuntimeConfig
from bao.losses import classification_loss
from bao.models import create_cam_net
from bao.runtime import resolve_device
from bao.train.common import prepare_model
from bao.train.engine import create_optimizer, train_loop
from benchmarks.system import machine_description, report

VARIANTS = {"fp32": (False, False), "amp": (True, False), "channels_last": (False, True), "amp_channels_last": (True, True)}


def random_batches(count: int, batch: int, size: int, num_classes: int, seed: int = 0) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    return [
        {"image": torch.randn(batch, 3, size, size, generator=generator), "labels": (torch.rand(batch, num_classes, generator=generator) > 0.6).float()}
        for _ in range(count)
    ]


def images_per_second(backbone: str, device: torch.device, amp: bool, channels_last: bool, batches: list[dict], compile_model: bool = False) -> dict:
    """Warm-epoch throughput and data-wait fraction of one variant."""
    torch.manual_seed(0)
    model = create_cam_net(ModelConfig(backbone=backbone, pretrained=False, output_stride=16), batches[0]["labels"].shape[1])
    net = prepare_model(model, device, RuntimeConfig(amp=amp, channels_last=channels_last, compile=compile_model))
    optimizer = create_optimizer(model.parameters(), 1e-4, 1e-4)
    cpu_amp = amp and device.type == "cpu"

    def step(batch, state):
        with torch.autocast("cpu", dtype=torch.bfloat16) if cpu_amp else contextlib.nullcontext():
            return {"loss_cls": classification_loss(net(batch["image"])["logits"].float(), batch["labels"])}

    state = train_loop(step, net, batches, optimizer, None, 2, device, (), "benchmark", amp, channels_last)
    return state.throughput[-1]


def run(args) -> dict:
    device = resolve_device(args.device)
    batches = random_batches(args.steps, args.batch, args.size, 20)
    best: dict[str, dict] = {}
    for _ in range(args.repeats):
        for name, (amp, channels_last) in VARIANTS.items():
            result = images_per_second(args.backbone, device, amp, channels_last, batches)
            if name not in best or result["images_per_s"] > best[name]["images_per_s"]:
                best[name] = result
    if args.compile:
        best["compile"] = images_per_second(args.backbone, device, device.type == "cuda", False, batches, compile_model=True)
    figures = {"device": str(device), "backbone": args.backbone, "image_size": args.size, "batch": args.batch, "steps_per_epoch": args.steps}
    if device.type == "cuda":
        figures["amp_dtype"] = "bfloat16" if torch.cuda.is_bf16_supported() else "float16 + GradScaler"
    else:
        figures["amp_dtype"] = "bfloat16 (CPU autocast; the pipeline keeps fp32 on CPU)"
    for name, result in best.items():
        figures[f"{name}_images_per_s"] = round(result["images_per_s"], 2)
        figures[f"{name}_data_wait_fraction"] = round(result["data_wait_fraction"], 4)
        figures[f"{name}_over_fp32"] = round(result["images_per_s"] / best["fp32"]["images_per_s"], 3)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    figures = run(args) | {"machine": machine_description()}
    report(figures, args.out)


if __name__ == "__main__":
    main()
