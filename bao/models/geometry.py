"""Where a network's feature cells sit on its input: stride and the pixel that cell 0 is centred on.

Pixel coordinates are pixel centres (pixel ``i`` is at ``i``), the convention of
``align_corners=False`` resizing. Feature cell ``o`` (per axis) is centred on input pixel
``offset + stride * o``. A conv or pool layer with kernel ``k``, stride ``s``, dilation ``d`` and
``p`` pixels of padding before the input centres its output ``o`` on input ``s*o - p + d*(k-1)/2``;
a chain of such layers composes. Symmetric ("same") padding with odd kernels gives offset 0 at any
stride; TensorFlow-style SAME padding (timm's ``tf_*`` models) pads after rather than before, so
each stride-2 layer adds half its window, and a ViT's 16x16 patches are centred on 16*o + 7.5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class FeatureGeometry:
    """Per axis (y, x): input pixels per feature cell, and the input pixel cell 0 is centred on."""

    stride: tuple[float, float]
    offset: tuple[float, float]


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _same_padding_before(size: int, kernel: int, stride: int, dilation: int) -> int:
    """Padding TensorFlow's SAME puts before the input (the smaller half of the total)."""
    total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2


def _is_dynamic_same(module: nn.Module) -> bool:
    """timm's ``Conv2dSame`` / ``MaxPool2dSame`` / ``AvgPool2dSame`` pad in forward, from the input size."""
    return type(module).__name__ in ("Conv2dSame", "MaxPool2dSame", "AvgPool2dSame")


def _layer_geometry(module: nn.Module, size: tuple[int, int]) -> tuple[tuple[int, int], tuple[float, float]]:
    """(stride, offset) of one conv/pool layer on an input of ``size`` (per axis)."""
    kernel, stride = _pair(module.kernel_size), _pair(module.stride or module.kernel_size)
    dilation = _pair(getattr(module, "dilation", 1))
    if _is_dynamic_same(module):
        padding = tuple(_same_padding_before(n, k, s, d) for n, k, s, d in zip(size, kernel, stride, dilation))
    elif isinstance(module.padding, str):  # "same" (stride 1 only in PyTorch) or "valid"
        padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation)) if module.padding == "same" else (0, 0)
    else:
        padding = _pair(module.padding)
    offset = tuple(-p + d * (k - 1) / 2 for p, k, d in zip(padding, kernel, dilation))
    return stride, offset


STRIDED_LAYERS = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


@torch.no_grad()
def trace_geometry(network: nn.Module, input_size: tuple[int, int], channels: int = 3) -> FeatureGeometry:
    """Geometry of ``network``'s output map on an input of ``input_size``, from its layers.

    One forward pass on zeros records every conv/pool layer in execution order. The main path is
    followed by resolution: a strided layer applied to the current resolution moves it on; a
    parallel branch (a residual shortcut) then finds its input at the old resolution and is
    skipped, as are stride-1 layers (odd kernels padded symmetrically, offset 0). A network whose
    shortcut is centred elsewhere than its main path (ResNet-D's 2x2 average-pool shortcuts, +0.5
    input px per level) has no single centre; the main path's is the one given."""
    events: list[tuple[nn.Module, tuple[int, int], tuple[int, int]]] = []

    def hook(module, args, output):
        events.append((module, tuple(args[0].shape[-2:]), tuple(output.shape[-2:])))

    modules = [m for m in network.modules() if isinstance(m, STRIDED_LAYERS)]
    handles = [m.register_forward_hook(hook) for m in modules]
    was_training = network.training
    try:
        network.eval()
        parameter = next(network.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        network(torch.zeros(1, channels, *input_size, device=device))
    finally:
        network.train(was_training)
        for handle in handles:
            handle.remove()
    current = tuple(input_size)
    stride, offset = [1.0, 1.0], [0.0, 0.0]
    for module, size, out_size in events:
        if size != current or out_size == size:
            continue
        layer_stride, layer_offset = _layer_geometry(module, size)
        for axis in range(2):
            offset[axis] += stride[axis] * layer_offset[axis]
            stride[axis] *= layer_stride[axis]
        current = out_size
    return FeatureGeometry(tuple(stride), tuple(offset))
