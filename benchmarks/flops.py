"""Model FLOP utilisation (MFU): FLOPs per training step, and the peaks they are compared with.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` over one forward and backward
pass (matmuls and convolutions, 2 FLOPs per multiply-add; elementwise ops are not counted, as
is usual for MFU). Two peaks: the GPU's dense bf16 tensor-core peak from its datasheet (a small
table by device name; None when the device is not in it), and a matmul peak measured in the same
process (bf16 on CUDA, fp32 on CPU), which is what the device actually sustains here.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

# Dense (no sparsity) bf16 tensor-core peaks, FLOP/s, from NVIDIA's datasheets. More specific
# names first: an "H100 PCIe" must not match the SXM entry.
DENSE_BF16_PEAKS: tuple[tuple[tuple[str, ...], float], ...] = (
    (("H100", "PCIE"), 756e12),
    (("H100",), 989e12),  # SXM
    (("H200",), 989e12),  # SXM; same tensor cores as the H100 SXM
    (("A100",), 312e12),
)


def training_step_flops(step: Callable[[], torch.Tensor]) -> int:
    """FLOPs of ``step()`` (a forward pass returning a scalar loss) plus the loss's backward pass."""
    with FlopCounterMode(display=False) as counter:
        step().backward()
    return int(counter.get_total_flops())


def datasheet_bf16_peak(device_name: str | None) -> float | None:
    """The dense bf16 peak (FLOP/s) of a GPU known by name, else None (never a guess)."""
    if not device_name:
        return None
    name = device_name.upper()
    return next((peak for keys, peak in DENSE_BF16_PEAKS if all(key in name for key in keys)), None)


def measured_matmul_peak(device: torch.device, size: int | None = None, repeats: int = 3) -> dict:
    """Best-of-``repeats`` FLOP/s of square matmuls: bf16 8192^3 on CUDA, fp32 1024^3 on CPU."""
    cuda = device.type == "cuda"
    size = size or (8192 if cuda else 1024)
    dtype = torch.bfloat16 if cuda else torch.float32
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    b = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    calls = 10 if cuda else 2
    torch.matmul(a, b)  # warm-up (cuBLAS handle and kernel selection)
    best = float("inf")
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(calls):
            torch.matmul(a, b)
        if cuda:
            torch.cuda.synchronize(device)
        best = min(best, (time.perf_counter() - start) / calls)
    return {"dtype": str(dtype).removeprefix("torch."), "size": size, "flops_per_s": 2 * size**3 / best}


def mfu(flops_per_step: float, steps_per_s: float, peak_flops_per_s: float | None) -> float | None:
    """Achieved FLOP/s over the peak; None without a peak."""
    if not peak_flops_per_s:
        return None
    return flops_per_step * steps_per_s / peak_flops_per_s


def utilisation(flops_per_image: float, images_per_s: float, peaks: dict[str, float | None]) -> dict:
    """Achieved TFLOP/s and MFU against each named peak (rounded for a report)."""
    achieved = flops_per_image * images_per_s
    figures = {"achieved_tflops_per_s": round(achieved / 1e12, 4)}
    for name, peak in peaks.items():
        value = mfu(flops_per_image, images_per_s, peak)
        figures[f"mfu_vs_{name}"] = None if value is None else round(value, 5)
    return figures


def device_peaks(device: torch.device) -> dict:
    """Both peaks for ``device``, with what they are, for a benchmark's JSON."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    measured = measured_matmul_peak(device)
    return {
        "device_name": name,
        "datasheet_dense_bf16_flops_per_s": datasheet_bf16_peak(name),
        "measured_matmul_dtype": measured["dtype"],
        "measured_matmul_size": measured["size"],
        "measured_matmul_flops_per_s": round(measured["flops_per_s"]),
    }
