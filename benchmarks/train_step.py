"""Training-step benchmark: images/s and MFU at fp32 vs mixed precision vs channels_last, through the real engine.

    python -m benchmarks.train_step [--backbone resnet18] [--size 64] [--batch 4] [--steps 3] [--device cpu] [--out FILE]

Each variant trains the CAM network for two short epochs of random batches through
``bao.train.engine.train_loop``; the second (warm) epoch's images/s is kept, best of
``repeats``, variants interleaved in this one process. Ratios are against fp32.
With ``--compile``, the model also runs under ``torch.compile`` at the precision the pipeline
would use on the device (AMP on CUDA: variant "amp_compile"; fp32 on CPU: "compile"), inside the
same repeat loop (its first epoch pays the compilation), and is also compared with the eager
variant of that precision (``amp_compile_over_amp``; on CPU that is ``compile_over_fp32``).
On CUDA, "amp" is the engine's mixed precision (bf16 where supported, else fp16 + GradScaler).
On CPU the pipeline always trains in fp32; "amp" there is bf16 autocast on CPU, measured only to
show whether it would help on this CPU (it needs AVX512-BF16/AMX to be faster).

MFU: the model FLOPs of one training step (forward + backward, counted by FlopCounterMode, see
``benchmarks.flops``) times steps/s, over the GPU's datasheet dense bf16 peak (None when the GPU
is not in the table, and on CPU) and over a matmul peak measured in this process (bf16 on CUDA,
fp32 on CPU).
"""

from __future__ import annotations

import argparse
import contextlib

import torch

from bao.config import ModelConfig, RuntimeConfig
from bao.losses import classification_loss
from bao.models import create_cam_net
from bao.runtime import resolve_device
from bao.train.common import prepare_model
from bao.train.engine import create_optimizer, train_loop
from benchmarks.flops import device_peaks, training_step_flops, utilisation
from benchmarks.system import add_run_arguments, machine_description, parse_run_arguments, report

VARIANTS = {"fp32": (False, False), "amp": (True, False), "channels_last": (False, True), "amp_channels_last": (True, True)}
COMPILED = {"compile": "fp32", "amp_compile": "amp"}  # torch.compile variant -> the eager variant of the same precision


def random_batches(count: int, batch: int, size: int, num_classes: int, *, seed: int = 0) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    return [
        {"image": torch.randn(batch, 3, size, size, generator=generator), "labels": (torch.rand(batch, num_classes, generator=generator) > 0.6).float()}
        for _ in range(count)
    ]


def cam_net(backbone: str, num_classes: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_cam_net(ModelConfig(backbone=backbone, pretrained=False, output_stride=16), num_classes)


def step_flops(backbone: str, batch: dict) -> int:
    """Model FLOPs of one fp32 training step on ``batch`` (the same for every variant)."""
    model = cam_net(backbone, batch["labels"].shape[1]).train()
    return training_step_flops(lambda: classification_loss(model(batch["image"])["logits"], batch["labels"]))


def images_per_second(
    backbone: str, device: torch.device, *, amp: bool, channels_last: bool, batches: list[dict], compile_model: bool = False
) -> dict:
    """Warm-epoch throughput and data-wait fraction of one variant."""
    model = cam_net(backbone, batches[0]["labels"].shape[1])
    net = prepare_model(model, device, RuntimeConfig(amp=amp, channels_last=channels_last, compile=compile_model))
    optimizer = create_optimizer(model.parameters(), 1e-4, 1e-4)
    cpu_amp = amp and device.type == "cpu"

    def step(batch, state):
        with torch.autocast("cpu", dtype=torch.bfloat16) if cpu_amp else contextlib.nullcontext():
            return {"loss_cls": classification_loss(net(batch["image"])["logits"].float(), batch["labels"])}

    state = train_loop(
        step, net, batches, optimizer, scheduler=None, epochs=2, device=device, description="benchmark", amp=amp, channels_last=channels_last
    )
    return state.throughput[-1]


def run(args) -> dict:
    device = resolve_device(args.device)
    batches = random_batches(args.steps, args.batch, args.size, 20)
    variants = {name: (amp, channels_last, False) for name, (amp, channels_last) in VARIANTS.items()}
    if args.compile:
        amp = device.type == "cuda"  # as the pipeline would run it: AMP on CUDA, fp32 on CPU
        variants["amp_compile" if amp else "compile"] = (amp, False, True)
    best: dict[str, dict] = {}
    for _ in range(args.repeats):
        for name, (amp, channels_last, compile_model) in variants.items():
            result = images_per_second(args.backbone, device, amp=amp, channels_last=channels_last, batches=batches, compile_model=compile_model)
            if name not in best or result["images_per_s"] > best[name]["images_per_s"]:
                best[name] = result
    figures = {"device": str(device), "backbone": args.backbone, "image_size": args.size, "batch": args.batch, "steps_per_epoch": args.steps}
    if device.type == "cuda":
        figures["amp_dtype"] = "bfloat16" if torch.cuda.is_bf16_supported() else "float16 + GradScaler"
    else:
        figures["amp_dtype"] = "bfloat16 (CPU autocast; the pipeline keeps fp32 on CPU)"
    flops_per_image = step_flops(args.backbone, batches[0]) / args.batch
    peaks = device_peaks(device)
    figures |= {"model_gflops_per_step": round(flops_per_image * args.batch / 1e9, 3), "model_gflops_per_image": round(flops_per_image / 1e9, 4)}
    figures |= {"peaks": peaks}
    named_peaks = {"datasheet_bf16": peaks["datasheet_dense_bf16_flops_per_s"], "measured_matmul": peaks["measured_matmul_flops_per_s"]}
    for name, result in best.items():
        figures[f"{name}_images_per_s"] = round(result["images_per_s"], 2)
        for key, value in utilisation(flops_per_image, result["images_per_s"], named_peaks).items():
            figures[f"{name}_{key}"] = value
        figures[f"{name}_data_wait_fraction"] = round(result["data_wait_fraction"], 4)
        for base in dict.fromkeys(("fp32", COMPILED.get(name, "fp32"))):
            figures[f"{name}_over_{base}"] = round(result["images_per_s"] / best[base]["images_per_s"], 3)
    return figures


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    return add_run_arguments(parser)


def main() -> None:
    args = parse_run_arguments(build_parser())
    figures = run(args) | {"machine": machine_description()}
    report(figures, args.out)


if __name__ == "__main__":
    main()
