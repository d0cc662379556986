"""Augmentations on torchvision's v2 API, so image and mask move together (masks resize nearest)."""

from __future__ import annotations

from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from bao.data.palette import IGNORE_INDEX

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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


def normalize() -> v2.Transform:
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def train_transform(crop_size: int, resize_long: tuple[int, int], color_jitter: tuple[float, ...]) -> v2.Transform:
    """Resize, flip, jitter, crop: the paper's recipe; crops pad images with 0 and masks with 255."""
    return v2.Compose([
        RandomLongSideResize(*resize_long),
        v2.RandomHorizontalFlip(),
        v2.ColorJitter(*color_jitter),
        normalize(),
        v2.RandomCrop(crop_size, pad_if_needed=True, fill={tv_tensors.Image: 0.0, tv_tensors.Mask: IGNORE_INDEX}),
    ])


def eval_transform() -> v2.Transform:
    return normalize()
