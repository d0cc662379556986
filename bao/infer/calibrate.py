"""Where a trained network's feature cells really sit, measured on its own maps, without masks.

A layer trace (``bao.models.geometry``) gives the centre of each cell's receptive field. A trained
network need not respond there: ``tf_efficientnet_lite0`` fine-tuned as the CAM network responds
12.5-15 input pixels up-left of its TensorFlow-SAME trace (16*o + 15), which put every label
drawn with the trace that far down-right (docs/method.md, "Alignment"). The measurement: a network
trained with horizontal flips maps a mirrored image to the mirrored map, so the map of an image
and the map of its mirror, each drawn on the image (the second mirrored back), agree when cells are
drawn where the network responds; a centre wrong by d input pixels draws them 2d apart. The shift
of the traced centres with the least disagreement, over a few training images at one scale, is
applied on both axes (the same layers run along both; a vertical mirror is no test, as the
network never trained on one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from bao.infer.align import GeometryFn, resize_to_image
from bao.infer.multiscale import BatchMapFn, size_buckets, square_inputs
from bao.infer.pseudo import max_normalized_cams
from bao.models.geometry import FeatureGeometry

SHIFT_STEP = 0.5  # input pixels between the candidate shifts


@dataclass(frozen=True)
class Calibration:
    """``shift``: input pixels added to the traced cell centres on both axes; the disagreements
    (mean squared difference of the max-normalised maps) at that shift and at the trace's."""

    shift: float
    disagreement: float
    disagreement_traced: float
    scale: int
    images: int
    limit: float  # the largest shift tried (one stride)

    @property
    def at_limit(self) -> bool:
        """The best shift is the largest tried: the network may respond farther off (or nowhere, untrained)."""
        return abs(self.shift) >= self.limit

    def geometry(self, traced: GeometryFn) -> GeometryFn:
        return shifted_geometry(traced, self.shift)

    def summary(self) -> dict:
        return {
            "mode": "calibrated", "cell_shift_px": self.shift, "scale": self.scale, "images": self.images,
            "mirror_disagreement": self.disagreement, "mirror_disagreement_traced": self.disagreement_traced, "limit_px": self.limit,
        }


def shifted_geometry(traced: GeometryFn, shift: float, *, axes: tuple[int, ...] = (0, 1)) -> GeometryFn:
    """``traced`` with its cell centres moved by ``shift`` input pixels along ``axes`` (0 = y, 1 = x)."""

    def geometry(input_size: tuple[int, int]) -> FeatureGeometry:
        base = traced(input_size)
        offset = tuple(base.offset[axis] + (shift if axis in axes else 0.0) for axis in range(2))
        return FeatureGeometry(base.stride, offset)

    return geometry


def mirror_disagreement(
    maps: torch.Tensor, mirror_maps: torch.Tensor, *, image_size: tuple[int, int], input_size: tuple[int, int], geometry: FeatureGeometry
) -> float:
    """Mean squared difference between (C, h, w) ``maps`` of an image and ``mirror_maps`` of its
    mirror, both drawn on the image with ``geometry`` and max-normalised per channel."""
    every = torch.ones(maps.shape[0], device=maps.device)
    drawn = resize_to_image(maps[None], image_size=image_size, input_size=input_size, geometry=geometry, align="geometric")[0]
    mirrored = resize_to_image(mirror_maps[None], image_size=image_size, input_size=input_size, geometry=geometry, align="geometric")[0].flip(-1)
    return float(((max_normalized_cams(drawn, every) - max_normalized_cams(mirrored, every)) ** 2).mean())


def calibrate_shift(
    forward: BatchMapFn,
    images: Sequence[torch.Tensor],
    labels: torch.Tensor,
    *,
    scale: int,
    traced: GeometryFn,
    channel: str = "cams",
    batch_size: int = 8,
) -> Calibration:
    """The shift of ``traced`` that makes each image's map and its mirror's agree best.

    ``forward`` is multi-scale inference's (a batch of square inputs and labels -> named maps);
    only the channels of each image's present classes are compared. Candidates run from minus to
    plus one stride, every ``SHIFT_STEP`` input pixels; a tie goes to the smallest shift in size."""
    if not images:
        raise ValueError("calibrate_shift: no images to calibrate on")
    count = len(images)
    batch = square_inputs(images, size_buckets([image.shape[-2:] for image in images]), scale)
    chunks = [(batch[i:i + batch_size], labels[i:i + batch_size]) for i in range(0, count, batch_size)]
    maps = torch.cat([forward(part, part_labels)[channel].float() for part, part_labels in chunks]
                     + [forward(part.flip(-1), part_labels)[channel].float() for part, part_labels in chunks])
    stride = traced((scale, scale)).stride[1]
    steps = int(stride // SHIFT_STEP)
    candidates = sorted((k * SHIFT_STEP for k in range(-steps, steps + 1)), key=abs)
    present = [torch.nonzero(row).flatten() for row in labels]

    def disagreement(shift: float) -> float:
        geometry = shifted_geometry(traced, shift, axes=(1,))((scale, scale))
        total = 0.0
        for i, image in enumerate(images):
            channels = present[i] if len(present[i]) else torch.arange(maps.shape[1], device=maps.device)
            total += mirror_disagreement(maps[i, channels], maps[count + i, channels], image_size=tuple(image.shape[-2:]),
                                         input_size=(scale, scale), geometry=geometry)
        return total / count

    scores = [disagreement(shift) for shift in candidates]
    best = min(range(len(candidates)), key=lambda index: (scores[index], index))
    return Calibration(shift=candidates[best], disagreement=scores[best], disagreement_traced=scores[0], scale=scale, images=count,
                       limit=steps * SHIFT_STEP)


def calibration_scale(scales: Sequence[int]) -> int:
    """The middle of the inference scales (the lower middle of an even count)."""
    ordered = sorted(scales)
    return ordered[(len(ordered) - 1) // 2]

