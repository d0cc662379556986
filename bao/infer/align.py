"""The one place strided maps and network inputs are resized between image and network pixels.

``resize_to_image`` draws a feature map on the original image. With ``align="geometric"`` each
image pixel samples the map where the network saw it: image pixel ``y`` (pixel centres) is at
network-input pixel ``(y + 0.5) * input / image - 0.5`` (the input is a resize of the image), and
input pixel ``u`` is at feature cell ``(u - offset) / stride`` (the network's ``FeatureGeometry``);
the map is sampled bilinearly there, clamped to its edge cells. ``align="official"`` is the
official BAO code's (and most WSSS code's) ``F.interpolate(bilinear, align_corners=False)``,
which puts cell ``o`` at input pixel ``stride * o + (stride - 1) / 2``: half a stride down-right of
where a symmetrically padded network centres it (7.5 px at stride 16).

``resize_input`` makes the network's square inputs as the official code does: PIL's antialiased
bicubic on the uint8 image (then normalised by the caller).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

from bao.models.geometry import FeatureGeometry

ALIGN_MODES = ("geometric", "official")
GeometryFn = Callable[[tuple[int, int]], FeatureGeometry]


def check_align(align: str) -> None:
    if align not in ALIGN_MODES:
        raise ValueError(f"pseudo_label.align must be one of {ALIGN_MODES}, got {align!r}")


def _axis_weights(image_len: int, input_len: int, cells: int, stride: float, offset: float, device: torch.device) -> torch.Tensor:
    """(image_len, cells) bilinear weights: row ``y`` samples the map at image pixel ``y``."""
    pixel = torch.arange(image_len, dtype=torch.float64, device=device)
    cell = (((pixel + 0.5) * input_len / image_len - 0.5) - offset) / stride
    cell = cell.clamp(0, cells - 1)
    low = cell.floor().clamp(max=cells - 1)
    fraction = cell - low
    low = low.long()
    high = (low + 1).clamp(max=cells - 1)
    weights = torch.zeros(image_len, cells, dtype=torch.float64, device=device)
    rows = torch.arange(image_len, device=device)
    weights.index_put_((rows, low), 1 - fraction, accumulate=True)
    weights.index_put_((rows, high), fraction, accumulate=True)
    return weights.float()


def resize_to_image(
    maps: torch.Tensor, *, image_size: tuple[int, int], input_size: tuple[int, int], geometry: FeatureGeometry | None, align: str
) -> torch.Tensor:
    """(N, C, h, w) maps computed on a network input of ``input_size`` (a resize of an image of
    ``image_size``) -> (N, C, *image_size), float32. ``geometry`` is needed for "geometric"."""
    check_align(align)
    maps = maps.float()
    if align == "official":
        return F.interpolate(maps, size=tuple(image_size), mode="bilinear", align_corners=False)
    if geometry is None:
        raise ValueError("resize_to_image: align='geometric' needs the network's feature geometry")
    weights = [
        _axis_weights(image_size[axis], input_size[axis], maps.shape[-2 + axis], geometry.stride[axis], geometry.offset[axis], maps.device)
        for axis in range(2)
    ]
    # two plain matmuls (not one einsum) so each image's result does not depend on the batch
    return weights[0] @ maps @ weights[1].T


def resize_input(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 3, *size) with antialiased bicubic (a = -0.5, PIL's kernel).

    uint8 images are resized as PIL does in the official code: width first, then height, each pass
    rounded and clamped to uint8 (measured against PIL: at most 1 level apart, on 0.02% of values).
    Float images (already normalised) are resized in one float pass."""
    if images.dtype != torch.uint8:
        return F.interpolate(images.float(), size=tuple(size), mode="bicubic", align_corners=False, antialias=True)
    resized = images.float()
    for pass_size in ((images.shape[-2], size[1]), tuple(size)):
        resized = F.interpolate(resized, size=pass_size, mode="bicubic", align_corners=False, antialias=True)
        resized = resized.round_().clamp_(0, 255)
    return resized.to(torch.uint8)
