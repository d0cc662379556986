"""PASCAL VOC 2012 layout (JPEGImages/, Annotations/*.xml, SegmentationClass/*.png, ImageSets/),
plus SBD (cls/*.mat, train.txt, val.txt) for the 10,582-image ``train_aug`` split.

``train_aug`` follows the usual rule: SBD train + SBD val + VOC train, minus every image of the
val split. Its masks come from VOC's SegmentationClass where VOC has one, else from SBD's
``GTcls.Segmentation``, checked like any mask and converted to palette PNGs under ``sbd_masks/``
of the output only once the whole dataset has passed validation.

Ids from the list files are hostile: each is checked (no ``..``, separator, NUL) before it names
a file, and a problem gives the list file and line.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.io import loadmat
from scipy.io.matlab import MatReadError

from bao.data.manifest import COLUMNS, join_path
from bao.data.palette import save_mask
from bao.data.source import ANYWHERE, RootGuard, Source, id_problem, inside, read_text, store_path

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
TRAIN_AUG = "train_aug"
SBD_MASK_DIR = "sbd_masks"


def read_split_ids(list_file: Path, problems: list[str], guard: RootGuard = ANYWHERE) -> dict[str, int]:
    """{id: line number} of a list file; an unsafe or repeated id is a problem naming its line."""
    if not list_file.is_file():
        problems.append(f"{list_file}: split list file not found")
        return {}
    text = read_text(list_file, problems, guard)
    if text is None:
        return {}
    ids: dict[str, int] = {}
    problems_before = len(problems)  # the list is shared by the whole dataset: count this file's own
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        image_id = line.split()[0]
        problem = id_problem(image_id)
        if problem:
            problems.append(f"{list_file}: line {number}: image id {image_id!r} {problem}")
        elif image_id in ids:
            problems.append(f"{list_file}: line {number}: image id {image_id!r} repeats line {ids[image_id]}")
        else:
            ids[image_id] = number
    if not ids and len(problems) == problems_before:
        problems.append(f"{list_file}: split list is empty")
    return ids


def read_xml_labels(
    xml_file: Path, classes: tuple[str, ...], problems: list[str], counts: Counter | None = None, *, guard: RootGuard = ANYWHERE
) -> list[int]:
    """Multi-hot labels from each <object>'s <name>; difficult and truncated objects count too
    (tallied in ``counts``). Person-layout <part> names are nested deeper and never read."""
    labels = [0] * len(classes)
    outside = guard.problem(xml_file)
    if outside:
        problems.append(outside)
        return labels
    try:
        objects = ET.parse(xml_file).getroot().findall("object")
    except (OSError, ET.ParseError, ValueError, RecursionError) as error:
        problems.append(f"{xml_file}: cannot read annotation ({error})")
        return labels
    for obj in objects:
        name = (obj.findtext("name") or "").strip()
        if name not in classes:
            problems.append(f"{xml_file}: unknown class name {name!r}")
            continue
        labels[classes.index(name)] = 1
        if counts is not None:
            counts["objects"] += 1
            counts["objects_difficult"] += obj.findtext("difficult", "0").strip() == "1"
            counts["objects_truncated"] += obj.findtext("truncated", "0").strip() == "1"
    return labels


def read_sbd_mask(mat_file: Path) -> np.ndarray:
    """``GTcls.Segmentation`` of an SBD cls/*.mat file as uint8 (H, W); ValueError says what is wrong."""
    try:
        mat = loadmat(mat_file, squeeze_me=True, struct_as_record=False, variable_names=["GTcls"])
    except (OSError, ValueError, TypeError, MatReadError, MemoryError, NotImplementedError) as error:
        raise ValueError(f"{mat_file}: unreadable .mat file ({error})") from None
    if "GTcls" not in mat:
        raise ValueError(f"{mat_file}: no variable 'GTcls' (expected an SBD cls/ file)")
    segmentation = getattr(mat["GTcls"], "Segmentation", None)
    if segmentation is None:
        raise ValueError(f"{mat_file}: GTcls has no field 'Segmentation'")
    segmentation = np.asarray(segmentation)
    if segmentation.ndim != 2 or segmentation.dtype.kind not in "ui" or segmentation.min(initial=0) < 0 or segmentation.max(initial=0) > 255:
        raise ValueError(f"{mat_file}: GTcls.Segmentation must be a 2-D array of class indices 0..255, got {segmentation.dtype} {segmentation.shape}")
    return segmentation.astype(np.uint8)


@dataclass
class _Reader:
    """Paths and accumulators shared by every row of one VOC read."""

    root: Path
    classes: tuple[str, ...]
    base: Path
    staging: Path | None
    sbd_root: Path | None
    problems: list[str]
    guard: RootGuard = ANYWHERE
    counts: Counter = field(default_factory=Counter)

    def image(self, image_id: str, origin: str) -> Path | None:
        jpeg = self.root / "JPEGImages" / f"{image_id}.jpg"
        if not jpeg.is_file() and self.sbd_root is not None and (self.sbd_root / "img" / f"{image_id}.jpg").is_file():
            return self.sbd_root / "img" / f"{image_id}.jpg"
        if not jpeg.is_file():
            self.problems.append(f"{origin}: names image {image_id!r}, but {jpeg} does not exist")
            return None
        return jpeg

    def sbd_mat(self, image_id: str) -> Path | None:
        """SBD's cls/<id>.mat where there is one. It is validated as a mask and converted to a PNG
        only after validation (``write_sbd_masks``); nothing is written while reading."""
        mat_file = self.sbd_root / "cls" / f"{image_id}.mat" if self.sbd_root is not None else None
        return mat_file if mat_file is not None and mat_file.is_file() else None

    def labels(self, image_id: str, sbd_mat: Path | None) -> list[int]:
        xml_file = self.root / "Annotations" / f"{image_id}.xml"
        if xml_file.is_file() or sbd_mat is None:
            return read_xml_labels(xml_file, self.classes, self.problems, self.counts, guard=self.guard)
        self.counts["labels_from_sbd_mask"] += 1
        try:
            if self.guard.problem(sbd_mat):
                raise ValueError("outside the dataset")
            present = set(np.unique(read_sbd_mask(sbd_mat)).tolist())
        except ValueError:
            present = set()  # validation lists the refused or unreadable mask (and the missing labels)
        return [int(index + 1 in present) for index in range(len(self.classes))]

    def row(self, image_id: str, role: str, origin: str) -> dict | None:
        image = self.image(image_id, origin)
        if image is None:
            return None
        voc_mask = self.root / "SegmentationClass" / f"{image_id}.png"
        sbd_mat = None if voc_mask.is_file() else self.sbd_mat(image_id)
        if voc_mask.is_file():
            mask_path = store_path(voc_mask, self.base, self.staging)
        elif sbd_mat is not None:
            mask_path = store_path(sbd_mat, self.base, self.staging)
        else:
            where = f"{voc_mask} nor {self.sbd_root / 'cls' / f'{image_id}.mat'}" if self.sbd_root else str(voc_mask)
            self.problems.append(f"{origin}: image {image_id!r} has no mask (no {where})")
            mask_path = ""
        labels = self.labels(image_id, sbd_mat)
        return {
            "image_id": image_id, "split": role, "image_path": store_path(image, self.base, self.staging),
            "mask_path": mask_path, "labels": labels, "origin": origin,
        }


def train_aug_ids(
    root: Path, sbd_root: Path, val_ids: set[str], counts: Counter, *, problems: list[str], guard: RootGuard = ANYWHERE
) -> dict[str, str]:
    """SBD train + SBD val + VOC train, minus the val split's images: {id: "list file: line N"}."""
    named: dict[str, str] = {}
    for list_file in (sbd_root / "train.txt", sbd_root / "val.txt", root / "ImageSets" / "Segmentation" / "train.txt"):
        for image_id, line in read_split_ids(list_file, problems, guard).items():
            named.setdefault(image_id, f"{list_file}: line {line}")
    counts["train_aug_val_images_removed"] = sum(image_id in val_ids for image_id in named)
    return {image_id: named[image_id] for image_id in sorted(named) if image_id not in val_ids}


def _split_ids(reader: _Reader, splits: dict[str, str]) -> dict[str, dict[str, str]]:
    """{role: {id: "list file: line N"}}; train_aug is computed last, once the val ids are known."""
    ids: dict[str, dict[str, str]] = {}
    for role, name in splits.items():
        if name != TRAIN_AUG:
            list_file = reader.root / "ImageSets" / "Segmentation" / f"{name}.txt"
            listed = read_split_ids(list_file, reader.problems, reader.guard)
            ids[role] = {image_id: f"{list_file}: line {line}" for image_id, line in listed.items()}
    others = {image_id for role_ids in ids.values() for image_id in role_ids}
    for role, name in splits.items():
        if name != TRAIN_AUG:
            continue
        if reader.sbd_root is None or not reader.sbd_root.is_dir():
            reader.problems.append(
                f"split {TRAIN_AUG!r} needs SBD: data.sbd_root ({reader.sbd_root}) must be the SBD directory holding cls/, train.txt and val.txt"
            )
            ids[role] = {}
        else:
            ids[role] = train_aug_ids(reader.root, reader.sbd_root, others, reader.counts, problems=reader.problems, guard=reader.guard)
    return ids


def read_voc(
    root: Path,
    splits: dict[str, str],
    classes: tuple[str, ...],
    base: Path,
    *,
    problems: list[str],
    staging: Path | None = None,
    sbd_root: Path | None = None,
    guard: RootGuard = ANYWHERE,
) -> Source:
    """One row per image of each requested split; ``splits`` maps role -> VOC list name (or train_aug).
    ``guard`` says where files may be read from. SBD masks stay .mat files in the table until
    ``finish`` (after validation) writes them as PNGs."""
    reader = _Reader(root, classes, base, staging, sbd_root, problems, guard)
    rows = []
    for role, role_ids in _split_ids(reader, splits).items():
        for image_id, origin in role_ids.items():
            row = reader.row(image_id, role, origin)
            if row is not None:
                rows.append(row)
    table = pd.DataFrame(rows, columns=[*COLUMNS, "origin"])
    return Source(table, classes, dict(reader.counts), write_sbd_masks)


def write_sbd_masks(staging: Path, table: pd.DataFrame) -> dict:
    """After validation: each SBD .mat mask as a palette PNG under ``staging/sbd_masks``; the
    table is pointed at the copies. Returns how many were written."""
    written = 0
    for index, row in table[table["mask_path"].str.endswith(".mat")].iterrows():
        relative = f"{SBD_MASK_DIR}/{row.image_id}.png"
        target = staging / relative
        (staging / SBD_MASK_DIR).mkdir(parents=True, exist_ok=True)
        save_mask(inside(staging, target), read_sbd_mask(join_path(staging, row.mask_path)))
        table.at[index, "mask_path"] = relative
        written += 1
    return {"sbd_masks": written} if written else {}
