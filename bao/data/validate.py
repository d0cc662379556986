"""Check a whole manifest before anything is written, collecting every problem, not just the first.

Images are fully decoded (a truncated JPEG fails here, not in epoch 3). Pixel formats the
pipeline cannot read as 8-bit RGB are either converted to an RGB PNG copy, where no information
a viewer would see is lost, or rejected with the reason:

* converted: 8-bit grey, 1-bit, palette without transparency, CMYK, RGBA/LA whose alpha is fully
  opaque, 16-bit grey or RGB (scaled to 8 bits), and JPEGs with an EXIF rotation (the copy keeps
  the stored pixel order, the one VOC and COCO masks are drawn on);
* rejected: transparent pixels (what lies under them is arbitrary), 16-bit images whose values
  all lie below 256 (scaling would turn them black), and modes such as 32-bit integer or float.

Any decoding error, and any image or mask over ``data.max_image_pixels`` pixels (a decompression
bomb: a small file whose header claims 50000x50000), is a listed problem naming the file; no
error in one file stops the others from being checked. Files that resolve outside the dataset
(``..`` or symlinks; see ``RootGuard``) are refused unless ``data.allow_outside_root``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from bao.config import PILLOW_MAX_PIXELS
from bao.data.manifest import join_path
from bao.data.palette import IGNORE_INDEX, read_mask
from bao.data.source import ANYWHERE, RootGuard, inside
from bao.data.voc import read_sbd_mask
from bao.io import atomic_path

CONVERTED_DIR = "converted"
EXIF_ORIENTATION = 0x0112
_CONVERTIBLE_MODES = {"L": "grey", "1": "1-bit", "P": "palette", "CMYK": "cmyk", "RGBA": "alpha", "LA": "alpha", "PA": "alpha"}
MAX_SHOWN_PROBLEMS = 200


class DatasetError(ValueError):
    """The input dataset has problems; the message lists each one with its file. Past
    ``MAX_SHOWN_PROBLEMS`` the full list goes to a temporary file that the message names (the
    output directory is not written when validation fails)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        self.problems_file = _write_problem_list(problems) if len(problems) > MAX_SHOWN_PROBLEMS else None
        shown = "\n".join(f"  - {problem}" for problem in problems[:MAX_SHOWN_PROBLEMS])
        more = ""
        if len(problems) > MAX_SHOWN_PROBLEMS:
            where = f"all {len(problems)} are listed in {self.problems_file}" if self.problems_file else "the full list could not be written"
            more = f"\n  ... and {len(problems) - MAX_SHOWN_PROBLEMS} more; {where}"
        super().__init__(f"{len(problems)} problem(s) in the input dataset:\n{shown}{more}")


def _write_problem_list(problems: list[str]) -> Path | None:
    try:
        handle, name = tempfile.mkstemp(prefix="bao-dataset-problems-", suffix=".txt")
        with os.fdopen(handle, "w", encoding="utf-8", errors="backslashreplace") as file:
            file.write("".join(f"{problem}\n" for problem in problems))
        return Path(name)
    except OSError:
        return None


@dataclass(frozen=True)
class ImageCheck:
    """What validation learnt about one image: its (H, W), a problem, or the conversion it needs."""

    size: tuple[int, int] | None = None
    problem: str | None = None
    conversion: str | None = None


def _png_bit_depth(path: Path) -> int:
    """Bits per sample from the PNG header (Pillow silently reads 16-bit RGB as 8-bit)."""
    with open(path, "rb") as handle:
        header = handle.read(25)
    return header[24] if header[:8] == b"\x89PNG\r\n\x1a\n" and len(header) == 25 else 8


def _conversion(image: Image.Image, path: Path) -> tuple[str | None, str | None]:
    """(conversion kind, problem) for a decoded image; both None for plain 8-bit RGB."""
    mode = image.mode
    if mode.startswith("I;16") or (mode in ("RGB", "L") and image.format == "PNG" and _png_bit_depth(path) == 16):
        high = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if high is None or high.max() < 256:
            return None, f"{path}: 16-bit image whose values all lie below 256; scaling it to 8 bits would make it black, save it as 8-bit"
        return "16-bit", None
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        alpha = np.asarray(image.convert("RGBA"))[..., 3]
        if (alpha < 255).any():
            return None, f"{path}: image has transparent pixels (mode {mode}); flatten it onto a background first"
        return "alpha", None
    if mode == "RGB":
        return ("exif-rotation", None) if image.getexif().get(EXIF_ORIENTATION, 1) != 1 else (None, None)
    if mode in _CONVERTIBLE_MODES:
        return _CONVERTIBLE_MODES[mode], None
    return None, f"{path}: unsupported pixel mode {mode}; convert it to 8-bit RGB"


def _too_many_pixels(path: Path, width: int, height: int, what: str) -> str | None:
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        return (f"{path}: {what} of {width}x{height} = {width * height} pixels exceeds data.max_image_pixels ({limit}); "
                "refused as a possible decompression bomb (raise the limit if the file is genuine)")
    return None


def inspect_image(path: Path) -> ImageCheck:
    """Decode ``path`` fully and say whether it can be used as is, after conversion, or not at all."""
    if not path.is_file():
        return ImageCheck(problem=f"{path}: image file not found")
    try:
        with Image.open(path) as image:  # reads the header only; Pillow refuses > 2x its limit here
            bomb = _too_many_pixels(path, image.width, image.height, "image")
            if bomb:
                return ImageCheck(problem=bomb)
            image.load()
            kind, problem = _conversion(image, path)
            size = (image.height, image.width)
    except Exception as error:  # a hostile file can make any decoder fail in any way; list it, check the rest
        return ImageCheck(problem=_decoder_problem(path, error, "image"))
    return ImageCheck(size=size, problem=problem, conversion=kind)


def _decoder_problem(path: Path, error: Exception, what: str) -> str:
    if isinstance(error, Image.DecompressionBombError):
        return f"{path}: refused as a possible decompression bomb ({error}; data.max_image_pixels sets the limit)"
    if str(error).startswith(str(path)):  # our own readers' messages already name the file
        return str(error)
    return f"{path}: unreadable or corrupt {what} ({type(error).__name__}: {error})"


def read_any_mask(path: Path) -> np.ndarray:
    """A palette/grey PNG mask, or SBD's .mat (converted to PNG after validation).

    A PNG's size is checked against the pixel limit from its header, before decoding; a .mat is
    checked after ``loadmat`` has decoded it (its size is not known before), so an oversized .mat
    costs its memory first (a MemoryError is reported as a problem like any decoder error)."""
    if path.suffix == ".mat":
        mask = read_sbd_mask(path)
        bomb = _too_many_pixels(path, mask.shape[1], mask.shape[0], "mask")
    else:
        with Image.open(path) as image:  # the header only
            bomb = _too_many_pixels(path, image.width, image.height, "mask")
        mask = None if bomb else read_mask(path)
    if bomb:
        raise ValueError(bomb)
    return mask


def _check_mask(path: Path, size: tuple[int, int] | None, num_classes: int, problems: list[str]) -> None:
    if not path.is_file():
        problems.append(f"{path}: mask file not found")
        return
    try:
        mask = read_any_mask(path)
    except Exception as error:  # any decoder failure of a hostile file is a listed problem
        problems.append(_decoder_problem(path, error, "mask"))
        return
    if size is not None and mask.shape != size:
        problems.append(f"{path}: mask size {mask.shape[1]}x{mask.shape[0]} differs from its image {size[1]}x{size[0]}")
    values = np.flatnonzero(np.bincount(mask.ravel(), minlength=256))  # present values; faster than np.unique
    bad = values[(values > num_classes) & (values != IGNORE_INDEX)]
    if bad.size:
        problems.append(f"{path}: mask values {bad.tolist()} outside 0..{num_classes} and {IGNORE_INDEX}")


def _check_row(row, num_classes: int, base: Path, guard: RootGuard) -> tuple[list[str], str | None]:
    """Problems of one row (image, declared size, labels, mask) and the image's conversion kind."""
    try:
        return _row_problems(row, num_classes, base, guard)
    except Exception as error:  # never let one file stop validation of the others
        return [f"{join_path(base, row.image_path)}: cannot be checked ({type(error).__name__}: {error})"], None


def _row_problems(row, num_classes: int, base: Path, guard: RootGuard) -> tuple[list[str], str | None]:
    problems: list[str] = []
    image_path = join_path(base, row.image_path)
    outside = guard.problem(image_path)
    check = ImageCheck(problem=outside) if outside else inspect_image(image_path)
    if check.problem:
        problems.append(check.problem)
    expected = (getattr(row, "height", None), getattr(row, "width", None))
    if check.size is not None and None not in expected and check.size != tuple(int(v) for v in expected):
        problems.append(f"{image_path}: image size {check.size[1]}x{check.size[0]} differs from its annotation {expected[1]}x{expected[0]}")
    if sum(row.labels) == 0:
        problems.append(f"{image_path}: image {row.image_id!r} has no class labels")
    if row.mask_path:
        mask_path = join_path(base, row.mask_path)
        outside = guard.problem(mask_path)
        if outside:
            problems.append(outside)
        else:
            _check_mask(mask_path, check.size, num_classes, problems)
    return problems, check.conversion


def validate_table(
    table: pd.DataFrame,
    num_classes: int,
    base: Path,
    problems: list[str],
    *,
    workers: int = 1,
    guard: RootGuard = ANYWHERE,
    max_pixels: int = PILLOW_MAX_PIXELS,
) -> dict[str, str]:
    """Append a problem for each bad row (splits, ids, files, formats, labels, masks are all checked);
    return {image_id: conversion kind} for the images that need an RGB copy. ``guard``: where files
    may be read from; ``max_pixels``: the decompression-bomb limit (set as Pillow's, process-wide)."""
    for role in ("train", "val"):
        if not (table["split"] == role).any():
            problems.append(f"split {role!r} has no images")
    _duplicate_ids(table, problems)
    conversions: dict[str, str] = {}
    with pixel_limit(max_pixels), ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(lambda row: _check_row(row, num_classes, base, guard), table.itertuples(index=False))
        for row, (row_problems, kind) in zip(table.itertuples(index=False), results):
            problems.extend(row_problems)
            if kind is not None:
                conversions[row.image_id] = kind
    return conversions


@contextlib.contextmanager
def pixel_limit(max_pixels: int) -> Iterator[None]:
    """Pillow's decompression-bomb limit set to ``max_pixels`` for the block, then restored (it is
    process-wide). Pillow's own warning between 1x and 2x the limit names no file; it is silenced
    because ``_too_many_pixels`` lists those files instead."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _duplicate_ids(table: pd.DataFrame, problems: list[str]) -> None:
    """One problem per repeated id, naming where each copy came from (file and line) when known."""
    repeated = table[table["image_id"].duplicated(keep=False)]
    for image_id, rows in repeated.groupby("image_id", sort=False):
        where = rows["origin"].tolist() if "origin" in rows else []
        problems.append(f"image id {image_id!r} appears more than once" + (f": {'; '.join(map(str, where))}" if where else ""))


def _to_rgb8(path: Path, kind: str) -> np.ndarray:
    """8-bit RGB pixels of ``path`` in stored order (no EXIF rotation)."""
    if kind == "16-bit":
        high = cv2.imread(str(path), cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
        low = np.round(high.astype(np.float64) / 257.0).astype(np.uint8)
        return np.repeat(low[..., None], 3, axis=2) if low.ndim == 2 else cv2.cvtColor(low[..., :3], cv2.COLOR_BGR2RGB)
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def convert_images(
    table: pd.DataFrame, conversions: dict[str, str], base: Path, staging: Path, *, max_pixels: int = PILLOW_MAX_PIXELS
) -> Counter:
    """Write an RGB PNG copy of each image in ``conversions`` under ``staging``; point the table at it.
    Runs only after validation passed (the ids are then known to be safe file names).

    Returns how many images were converted, by kind (reported as warnings)."""
    counts: Counter = Counter()
    if not conversions:
        return counts
    (staging / CONVERTED_DIR).mkdir(parents=True, exist_ok=True)
    with pixel_limit(max_pixels):
        for index, row in table[table["image_id"].isin(conversions)].iterrows():
            kind = conversions[row.image_id]
            relative = f"{CONVERTED_DIR}/{row.image_id}.png"
            with atomic_path(inside(staging, staging / relative)) as temp:
                Image.fromarray(_to_rgb8(join_path(base, row.image_path), kind)).save(temp, format="PNG")
            table.at[index, "image_path"] = relative
            counts[kind] += 1
    return counts
