"""Multi-scale + flip inference: square resizes, un-flip, resize back to the image, sum.

``batched_multiscale_maps`` computes them for a batch of images with one forward pass per scale
(tests check that a batch gives what the same images give one at a time).
Inputs are resized with ``resize_input`` and maps drawn back on the image with
``resize_to_image`` (``bao.infer.align``); ``align="geometric"`` draws each cell where the network
saw it and needs ``geometry`` (network input size -> the network's ``FeatureGeometry``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from bao.infer.align import GeometryFn, check_align, resize_input, resize_to_image


def _to_image(
    maps: torch.Tensor, count: int, flip: bool, *, image_size, input_size, geometry: GeometryFn | None, align: str
) -> torch.Tensor:
    """Maps of ``count`` images (then, with ``flip``, of their mirrors) -> summed at ``image_size``.

    Geometric: a mirror's map is drawn on the mirrored image with the network's geometry, then
    mirrored back. Official: the map is un-flipped first and both are resized together, which
    puts the mirror's cells where they belong only if the grid is symmetric about the image centre
    (offset (stride - 1) / 2, e.g. a ViT's patches)."""
    feature_geometry = geometry(tuple(input_size)) if align == "geometric" and geometry is not None else None
    resize = lambda m: resize_to_image(m, image_size=image_size, input_size=input_size, geometry=feature_geometry, align=align)  # noqa: E731
    maps = maps.float()
    if not flip:
        return resize(maps[:count])
    if align == "official":
        return resize(maps[:count] + maps[count:].flip(-1))
    return resize(maps[:count]) + resize(maps[count:]).flip(-1)


BatchMapFn = Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


def size_buckets(sizes: Sequence[tuple[int, int]]) -> dict[tuple[int, int], list[int]]:
    """Positions of the images of each (H, W), so same-size images resize in one call."""
    buckets: dict[tuple[int, int], list[int]] = {}
    for position, size in enumerate(sizes):
        buckets.setdefault(tuple(size), []).append(position)
    return buckets


def square_inputs(images: Sequence[torch.Tensor], buckets: dict, scale: int) -> torch.Tensor:
    """Every image resized to (scale, scale), in input order; one resize per size bucket."""
    resized: list[torch.Tensor | None] = [None] * len(images)
    for positions in buckets.values():
        stacked = torch.stack([images[p] for p in positions])
        for p, square in zip(positions, resize_input(stacked, (scale, scale))):
            resized[p] = square
    return torch.stack(resized)


def batched_multiscale_maps(
    forward: BatchMapFn,
    images: Sequence[torch.Tensor],
    labels: torch.Tensor,
    scales: Sequence[int],
    *,
    flip: bool,
    align: str = "geometric",
    geometry: GeometryFn | None = None,
) -> list[dict[str, torch.Tensor]]:
    """Each image's maps, named by ``forward``, summed over scales at the image's (H, W), float32:
    per scale, one forward pass over every image (sizes may differ) and its mirror; maps are
    resized back on the images' device.

    ``forward`` takes a batch (M, 3, s, s) and its labels (M, K) and returns maps (M, C, h, w).
    Images are (3, H, W), uint8 or float already normalised. The sums run over scales in order,
    so a batch gives exactly what each image alone gives.
    """
    check_align(align)
    count = len(images)
    buckets = size_buckets([image.shape[-2:] for image in images])
    summed: list[dict[str, torch.Tensor]] = [{} for _ in images]
    for scale in scales:
        resized = square_inputs(images, buckets, scale)
        batch = torch.cat([resized, resized.flip(-1)]) if flip else resized
        for name, maps in forward(batch, labels.repeat(2, 1) if flip else labels).items():
            for size, positions in buckets.items():
                rows = positions + [count + p for p in positions] if flip else positions
                restored = _to_image(maps[rows], len(positions), flip, image_size=size, input_size=(scale, scale), geometry=geometry, align=align)
                for p, map_at_size in zip(positions, restored):
                    summed[p][name] = summed[p][name] + map_at_size if name in summed[p] else map_at_size
    return summed
