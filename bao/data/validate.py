"""Check a whole manifest before anything is written, collecting every problem, not just the first."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from bao.data.manifest import join_path
from bao.data.palette import IGNORE_INDEX, read_mask


class DatasetError(ValueError):
    """The input dataset has problems; the message lists each one with its file."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        shown = "\n".join(f"  - {problem}" for problem in problems[:200])
        more = f"\n  ... and {len(problems) - 200} more" if len(problems) > 200 else ""
        super().__init__(f"{len(problems)} problem(s) in the input dataset:\n{shown}{more}")


def _image_size(path: Path, problems: list[str]) -> tuple[int, int] | None:
    if not path.is_file():
        problems.append(f"{path}: image file not found")
        return None
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        problems.append(f"{path}: unreadable or corrupt image")
        return None
    return image.shape[:2]


def _check_mask(path: Path, size: tuple[int, int] | None, num_classes: int, problems: list[str]) -> None:
    try:
        mask = read_mask(path)
    except (OSError, ValueError) as error:
        problems.append(f"{path}: unreadable mask ({error})")
        return
    if size is not None and mask.shape != size:
        problems.append(f"{path}: mask size {mask.shape[1]}x{mask.shape[0]} differs from its image {size[1]}x{size[0]}")
    values = np.unique(mask)
    bad = values[(values > num_classes) & (values != IGNORE_INDEX)]
    if bad.size:
        problems.append(f"{path}: mask values {bad.tolist()} outside 0..{num_classes} and {IGNORE_INDEX}")


def validate_table(table: pd.DataFrame, num_classes: int, base: Path, problems: list[str]) -> None:
    """Append a problem for each bad row; splits, ids, files, labels and masks are all checked."""
    for role in ("train", "val"):
        if not (table["split"] == role).any():
            problems.append(f"split {role!r} has no images")
    duplicated = table["image_id"][table["image_id"].duplicated()].unique()
    for image_id in duplicated:
        problems.append(f"image id {image_id!r} appears more than once")
    for row in table.itertuples(index=False):
        image_path = join_path(base, row.image_path)
        size = _image_size(image_path, problems)
        if sum(row.labels) == 0:
            problems.append(f"{image_path}: image {row.image_id!r} has no class labels")
        if row.mask_path:
            _check_mask(join_path(base, row.mask_path), size, num_classes, problems)
