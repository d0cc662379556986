"""A plain folder of the user's own images::

    root/images/<name>.jpg|png      any file name; the image id is the name without extension
    root/labels.csv                 image,labels  with labels "cat;dog"   (list form), or
                                    image,cat,dog with 0/1 per class      (column form);
                                    an optional split column (data.folder.split_column)
    root/masks/<id>.png             optional: class index per pixel (0 = background, 255 = ignore)
    root/classes.txt                optional: one class name per line, in mask-index order

Without classes.txt the classes are the sorted label names (list form) or the class columns in
header order (column form); mask value k means the k-th of those classes.

Names in labels.csv are hostile: each must be a plain file name in images/ (no ``..`` or
separator), and its id (the name without extension) must be safe to name output files.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from bao.config import FolderConfig
from bao.data.manifest import COLUMNS, stored_path
from bao.data.source import ANYWHERE, RootGuard, Source, image_name_problem, label_vector, read_text

LABELS_FILE = "labels.csv"
CLASSES_FILE = "classes.txt"
IMAGE_COLUMN = "image"
LABELS_COLUMN = "labels"
SEPARATOR = ";"


def read_classes_file(path: Path, problems: list[str], guard: RootGuard = ANYWHERE) -> tuple[str, ...] | None:
    if not path.is_file():
        return None
    text = read_text(path, problems, guard)
    if text is None:
        return None  # the problem is listed; the classes are then inferred, with no follow-on problems
    names = [line.strip() for line in text.splitlines() if line.strip()]
    for name in sorted({name for name in names if names.count(name) > 1}):
        problems.append(f"{path}: class {name!r} is listed more than once")
    if not names:
        problems.append(f"{path}: no class names")
    return tuple(names)


def _read_csv(path: Path, problems: list[str], split_column: str | None, guard: RootGuard = ANYWHERE) -> pd.DataFrame | None:
    if not path.is_file():
        problems.append(f"{path}: labels file not found")
        return None
    text = read_text(path, problems, guard)
    if text is None:
        return None
    reader = csv.reader(io.StringIO(text), skipinitialspace=True, strict=True)
    lines: list[tuple[int, list[str]]] = []  # (line number, fields) of each non-blank record
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                lines.append((reader.line_num, row))
    except csv.Error as error:
        problems.append(f"{path}: line {reader.line_num}: cannot parse CSV ({error})")
        return None
    if not lines:
        problems.append(f"{path}: cannot parse CSV (no header line)")
        return None
    header = [cell.strip() for cell in lines[0][1]]
    repeated = sorted({name for name in header if header.count(name) > 1})
    ragged = [f"line {number} has {len(row)} fields" for number, row in lines[1:] if len(row) != len(header)]
    if repeated or ragged:
        reason = f"column names {repeated} repeat" if repeated else f"the header has {len(header)} fields; {', '.join(ragged[:5])}"
        problems.append(f"{path}: cannot parse CSV ({reason})")
        return None
    table = pd.DataFrame([row for _, row in lines[1:]], columns=header, dtype=str)
    table.attrs["lines"] = [number for number, _ in lines[1:]]  # for problems that name the line
    if IMAGE_COLUMN not in table.columns:
        problems.append(f"{path}: no {IMAGE_COLUMN!r} column (columns: {list(table.columns)})")
        return None
    if LABELS_COLUMN not in table.columns and not [c for c in table.columns if c not in (IMAGE_COLUMN, split_column)]:
        problems.append(
            f"{path}: no {LABELS_COLUMN!r} column and no class columns (columns: {list(table.columns)}); "
            f"give labels as a {LABELS_COLUMN!r} column (\"cat;dog\") or one 0/1 column per class"
        )
        return None
    return table


def _list_names(value: str) -> list[str]:
    return [name.strip() for name in value.split(SEPARATOR) if name.strip()]


def _classes(csv: Path, table: pd.DataFrame, class_columns: list[str], listed: tuple[str, ...] | None, *, problems: list[str]) -> tuple[str, ...]:
    """classes.txt when given (checked against the class columns), else inferred from the CSV."""
    if not class_columns:
        return listed if listed is not None else tuple(sorted({n for value in table[LABELS_COLUMN] for n in _list_names(value)}))
    if listed is None:
        return tuple(class_columns)
    for column in class_columns:
        if column not in listed:
            problems.append(f"{csv}: column {column!r} is not a class in {CLASSES_FILE}")
    for name in listed:
        if name not in class_columns:
            problems.append(f"{csv}: class {name!r} of {CLASSES_FILE} has no column")
    return listed


def _row_labels(csv: Path, line: int, record: dict, classes: tuple[str, ...], *, class_columns: list[str], problems: list[str]) -> list[int]:
    if not class_columns:
        names = _list_names(record[LABELS_COLUMN])
        for name in names:
            if name not in classes:
                problems.append(f"{csv}: line {line}: unknown class name {name!r}")
        return label_vector(names, classes)
    present = []
    for column in class_columns:
        value = record[column].strip()
        if value not in ("0", "1"):
            problems.append(f"{csv}: line {line}: column {column!r} must be 0 or 1, got {value!r}")
        elif value == "1":
            present.append(column)
    return label_vector(present, classes)


def assign_splits(count: int, val_fraction: float, seed: int) -> list[str]:
    """A seeded random train/val split of ``count`` rows; both sides get one row when count >= 2."""
    num_val = min(max(int(round(count * val_fraction)), 1), count - 1) if count >= 2 else 0
    roles = np.array(["train"] * count, dtype=object)
    roles[np.random.default_rng(seed).permutation(count)[:num_val]] = "val"
    return roles.tolist()


def _roles(csv: Path, table: pd.DataFrame, splits: dict[str, str], cfg: FolderConfig, *, problems: list[str]) -> list[str | None]:
    """Each row's role ("train"/"val") from the split column, or a seeded ratio; None = other split."""
    if cfg.split_column is None:
        return assign_splits(len(table), cfg.val_fraction, cfg.split_seed)
    if cfg.split_column not in table.columns:
        problems.append(f"{csv}: split column {cfg.split_column!r} (data.folder.split_column) not found")
        return [None] * len(table)
    role_of = {name: role for role, name in splits.items()}
    return [role_of.get(value.strip()) for value in table[cfg.split_column]]


def read_folder(
    root: Path, splits: dict[str, str], cfg: FolderConfig, base: Path, *, problems: list[str], guard: RootGuard = ANYWHERE
) -> Source:
    """One row per labels.csv line in the requested splits; ``guard`` says where files may be read from."""
    csv = root / LABELS_FILE
    if not (root / "images").is_dir():
        problems.append(f"{root / 'images'}: image directory not found")
    table = _read_csv(csv, problems, cfg.split_column, guard)
    listed = read_classes_file(root / CLASSES_FILE, problems, guard)
    if table is None:
        return Source(pd.DataFrame(columns=list(COLUMNS)), listed or ())
    reserved = {IMAGE_COLUMN, cfg.split_column}
    class_columns = [] if LABELS_COLUMN in table.columns else [c for c in table.columns if c not in reserved]
    classes = _classes(csv, table, class_columns, listed, problems=problems)
    counts: Counter = Counter()
    rows = []
    for position, (record, role) in enumerate(zip(table.to_dict("records"), _roles(csv, table, splits, cfg, problems=problems))):
        line = table.attrs["lines"][position]
        name = record[IMAGE_COLUMN].strip()
        unsafe = image_name_problem(name)
        if unsafe:
            problems.append(f"{csv}: line {line}: image name {name!r} {unsafe}; it must be a file name in images/")
            continue
        image = root / "images" / name
        if not name or not image.is_file():
            if (root / "images").is_dir():  # else reported once above
                problems.append(f"{csv}: line {line} names image {name!r}, but {image} does not exist")
            continue
        labels = _row_labels(csv, line, record, classes, class_columns=class_columns, problems=problems)
        if role is None:
            counts["rows_in_other_splits"] += 1
            continue
        mask = root / "masks" / f"{Path(name).stem}.png"
        counts["masks"] += mask.is_file()
        rows.append({
            "image_id": Path(name).stem, "split": role, "image_path": stored_path(image, base),
            "mask_path": stored_path(mask, base) if mask.is_file() else "", "labels": labels, "origin": f"{csv}: line {line}",
        })
    return Source(pd.DataFrame(rows, columns=[*COLUMNS, "origin"]), classes, dict(counts))
