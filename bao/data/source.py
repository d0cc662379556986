"""What a dataset reader hands to ``prepare``: rows to validate, class names, and deferred work."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bao.data.manifest import COLUMNS, stored_path


@dataclass
class Source:
    """``table`` has the manifest columns (plus optional ``height``/``width`` to check image sizes
    against). ``finish`` runs only after validation passed, for work too costly to do on a dataset
    that may be rejected (COCO mask rasterisation); it may fill ``mask_path`` and returns counts."""

    table: pd.DataFrame
    classes: tuple[str, ...]
    info: dict = field(default_factory=dict)
    finish: Callable[[Path, pd.DataFrame], dict] | None = None


def label_vector(names, classes: tuple[str, ...]) -> list[int]:
    """Multi-hot vector of ``names``, which must all be in ``classes``."""
    present = set(names)
    return [int(name in present) for name in classes]


def store_path(path: Path, base: Path, staging: Path | None) -> str:
    """Manifest path of ``path``: files generated in the staging directory move with it, so they are
    stored relative to it; input files as ``stored_path`` relative to the final directory ``base``."""
    if staging is not None and path.is_relative_to(staging):
        return path.relative_to(staging).as_posix()
    return stored_path(path, base)
