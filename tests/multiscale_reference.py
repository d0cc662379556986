"""The one-image multi-scale + flip reference that ``bao.infer.multiscale.batched_multiscale_maps``
must reproduce (the library only runs the batched version)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.nn import functional as F

MapFn = Callable[[torch.Tensor], dict[str, torch.Tensor]]


def multiscale_maps(forward: MapFn, image: torch.Tensor, scales: Sequence[int], flip: bool) -> dict[str, torch.Tensor]:
    """``image`` (3, H, W) normalized; returns each map named by ``forward`` summed at (H, W), float32.

    ``forward`` takes a batch (N, 3, s, s) and returns maps (N, C, h, w); an image and its mirror
    share one forward pass.
    """
    height, width = image.shape[-2:]
    summed: dict[str, torch.Tensor] = {}
    for scale in scales:
        resized = F.interpolate(image[None], size=(scale, scale), mode="bilinear", align_corners=False)
        batch = torch.cat([resized, resized.flip(-1)]) if flip else resized
        for name, maps in forward(batch).items():
            maps = maps.float()
            merged = maps[:1] + maps[1:2].flip(-1) if flip else maps[:1]
            merged = F.interpolate(merged, size=(height, width), mode="bilinear", align_corners=False)[0]
            summed[name] = summed[name] + merged if name in summed else merged
    return summed
