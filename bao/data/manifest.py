"""The dataset table every stage after ``prepare`` reads; nothing downstream knows the source format.

Columns: ``image_id`` (str), ``split`` ("train" or "val": the role, whatever the source split was
called), ``image_path`` and ``mask_path`` (str, relative to the manifest directory or absolute;
``mask_path`` is empty when there is no mask), ``labels`` (multi-hot list of K ints).
Masks are for evaluation only: no training stage reads ``mask_path``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bao.io import atomic_path, read_json, write_json

MANIFEST_FILE = "manifest.parquet"
CLASSES_FILE = "classes.json"
SPLITS = ("train", "val")
COLUMNS = ("image_id", "split", "image_path", "mask_path", "labels")


@dataclass(frozen=True)
class Manifest:
    table: pd.DataFrame
    classes: tuple[str, ...]
    root: Path

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, name: str) -> pd.DataFrame:
        rows = self.table[self.table["split"] == name].reset_index(drop=True)
        if rows.empty:
            raise ValueError(f"{self.root / MANIFEST_FILE}: split {name!r} has no images")
        return rows

    def resolve(self, stored: str) -> Path:
        return join_path(self.root, stored)

    def label_matrix(self, rows: pd.DataFrame) -> np.ndarray:
        return np.stack([np.asarray(labels, dtype=np.float32) for labels in rows["labels"]])


def stored_path(path: Path, base: Path) -> str:
    """Absolute paths stay absolute (external datasets); relative ones are made relative to ``base``."""
    return str(path) if path.is_absolute() else os.path.relpath(path, base)


def join_path(base: Path, stored: str) -> Path:
    """Inverse of ``stored_path``; normalised so ``..`` works before ``base`` exists."""
    return Path(os.path.normpath(Path(base) / stored))


def write_manifest(directory: str | Path, table: pd.DataFrame, classes: list[str], extra: dict) -> None:
    directory = Path(directory)
    table = table.loc[:, list(COLUMNS)].reset_index(drop=True)
    with atomic_path(directory / MANIFEST_FILE) as temp:
        table.to_parquet(temp, index=False)
    write_json(directory / CLASSES_FILE, {"classes": list(classes), **extra})


def read_manifest(directory: str | Path) -> Manifest:
    directory = Path(directory)
    table = pd.read_parquet(directory / MANIFEST_FILE)
    classes = tuple(read_json(directory / CLASSES_FILE)["classes"])
    table["labels"] = table["labels"].map(lambda labels: [int(v) for v in labels])
    table["mask_path"] = table["mask_path"].fillna("")
    return Manifest(table=table, classes=classes, root=directory)
