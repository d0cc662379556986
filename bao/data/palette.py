"""PASCAL VOC palette PNG masks: the on-disk format every dataset here is evaluated in."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

IGNORE_INDEX = 255


@lru_cache(maxsize=1)
def _voc_palette() -> tuple[int, ...]:
    palette = []
    for index in range(256):
        red = green = blue = 0
        value = index
        for bit in range(8):
            red |= ((value >> 0) & 1) << (7 - bit)
            green |= ((value >> 1) & 1) << (7 - bit)
            blue |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette.extend((red, green, blue))
    return tuple(palette)


def voc_palette() -> list[int]:
    """The 256-entry VOC colour map (bit-interleaved class index), flattened to 768 ints."""
    return list(_voc_palette())


def mask_to_image(mask: np.ndarray) -> Image.Image:
    if mask.ndim != 2:
        raise ValueError(f"a mask must be 2-D, got shape {mask.shape}")
    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    image.putpalette(voc_palette())
    return image


def save_mask(path: str | Path, mask: np.ndarray) -> None:
    mask_to_image(mask).save(path, format="PNG")


def read_mask(path: str | Path) -> np.ndarray:
    """Class indices of a palette or single-channel PNG (palette indices are not converted to RGB)."""
    with Image.open(path) as image:
        if image.mode not in ("P", "L"):
            raise ValueError(f"{path}: mask must be a palette or 8-bit greyscale PNG, got mode {image.mode}")
        return np.asarray(image, dtype=np.uint8).copy()
