"""Augmentations on torchvision's v2 API, so image and mask move together (masks resize nearest).

Images are normalised with the mean and std the backbone's pretrained weights were trained with
(``Normalization``, from the model: timm's pretrained config, e.g. 0.5/0.5 for EfficientNet-Lite),
in training and at inference alike; ImageNet's statistics are only the default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from bao.data.palette import IGNORE_INDEX

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Normalization:
    """Per-channel RGB mean and std of [0, 1] images that a backbone expects."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"normalization needs 3 means and 3 positive stds, got mean={self.mean} std={self.std}")


IMAGENET = Normalization()


class RandomLongSideResize(v2.Transform):
    """Resize so the long side is uniform in [low, high] (the paper's 320..640 at crop 512)."""

    def __init__(self, low: int, high: int):
        super().__init__()
        self.low, self.high = low, high

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        long_side = int(torch.randint(self.low, self.high + 1, ()).item())
        scale = long_side / max(height, width)
        return {"size": [max(1, round(height * scale)), max(1, round(width * scale))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return F.resize(inpt, params["size"], antialias=True)


def normalize(normalization: Normalization = IMAGENET) -> v2.Transform:
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(normalization.mean), list(normalization.std))])


def train_transform(
    crop_size: int, resize_long: tuple[int, int], color_jitter: tuple[float, ...], *, normalization: Normalization = IMAGENET
) -> v2.Transform:
    """Resize, flip, jitter, crop: the paper's recipe; crops pad images with 0 and masks with 255."""
    return v2.Compose([
        RandomLongSideResize(*resize_long),
        v2.RandomHorizontalFlip(),
        v2.ColorJitter(*color_jitter),
        normalize(normalization),
        v2.RandomCrop(crop_size, pad_if_needed=True, fill={tv_tensors.Image: 0.0, tv_tensors.Mask: IGNORE_INDEX}),
    ])


def eval_transform(normalization: Normalization = IMAGENET) -> v2.Transform:
    return normalize(normalization)
