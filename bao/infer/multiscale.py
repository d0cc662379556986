"""Multi-scale + flip inference: square resizes, un-flip, resize back to the image, sum.

``batched_multiscale_maps`` computes the maps of a batch of images with one forward pass per
scale (the pseudo-label stage uses it); tests/multiscale_reference.py holds the one-image
reference it is checked against.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.nn import functional as F

BatchMapFn = Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


def size_buckets(sizes: Sequence[tuple[int, int]]) -> dict[tuple[int, int], list[int]]:
    """Positions of the images of each (H, W), so same-size images resize in one call."""
    buckets: dict[tuple[int, int], list[int]] = {}
    for position, size in enumerate(sizes):
        buckets.setdefault(tuple(size), []).append(position)
    return buckets


def _square_batch(images: Sequence[torch.Tensor], buckets: dict, scale: int) -> torch.Tensor:
    """Every image resized to (scale, scale), in input order; one interpolate per size bucket."""
    resized: list[torch.Tensor | None] = [None] * len(images)
    for positions in buckets.values():
        stacked = torch.stack([images[p] for p in positions])
        for p, square in zip(positions, F.interpolate(stacked, size=(scale, scale), mode="bilinear", align_corners=False)):
            resized[p] = square
    return torch.stack(resized)


def batched_multiscale_maps(
    forward: BatchMapFn, images: Sequence[torch.Tensor], labels: torch.Tensor, *, scales: Sequence[int], flip: bool
) -> list[dict[str, torch.Tensor]]:
    """The reference ``multiscale_maps`` (tests/multiscale_reference.py) for several images (sizes may differ) at once: per scale, one forward
    pass over every image and its mirror; maps are resized back on the images' device.

    ``forward`` takes a batch (M, 3, s, s) and its labels (M, K) and returns maps (M, C, h, w).
    The sums are taken in the same order as ``multiscale_maps``, image by image.
    """
    count = len(images)
    buckets = size_buckets([image.shape[-2:] for image in images])
    summed: list[dict[str, torch.Tensor]] = [{} for _ in images]
    for scale in scales:
        resized = _square_batch(images, buckets, scale)
        batch = torch.cat([resized, resized.flip(-1)]) if flip else resized
        for name, maps in forward(batch, labels.repeat(2, 1) if flip else labels).items():
            maps = maps.float()
            merged = maps[:count] + maps[count:].flip(-1) if flip else maps
            for size, positions in buckets.items():
                restored = F.interpolate(merged[positions], size=size, mode="bilinear", align_corners=False)
                for p, map_at_size in zip(positions, restored):
                    summed[p][name] = summed[p][name] + map_at_size if name in summed[p] else map_at_size
    return summed
