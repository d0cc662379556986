"""PASCAL VOC 2012 layout (JPEGImages/, Annotations/*.xml, SegmentationClass/*.png, ImageSets/),
plus SBD (cls/*.mat, train.txt, val.txt) for the 10,582-image ``train_aug`` split.

``train_aug`` follows the usual rule: SBD train + SBD val + VOC train, minus every image of the
val split. Its masks come from VOC's SegmentationClass where VOC has one, else from SBD's
``GTcls.Segmentation`` (converted to palette PNGs under ``sbd_masks/`` of the output).
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

from bao.data.manifest import COLUMNS
from bao.data.palette import save_mask
from bao.data.source import Source, store_path

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
TRAIN_AUG = "train_aug"
SBD_MASK_DIR = "sbd_masks"


def read_split_ids(list_file: Path, problems: list[str]) -> list[str]:
    if not list_file.is_file():
        problems.append(f"{list_file}: split list file not found")
        return []
    ids = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
    if not ids:
        problems.append(f"{list_file}: split list is empty")
    return ids


def read_xml_labels(xml_file: Path, classes: tuple[str, ...], problems: list[str], counts: Counter | None = None) -> list[int]:
    """Multi-hot labels from each <object>'s <name>; difficult and truncated objects count too
    (tallied in ``counts``). Person-layout <part> names are nested deeper and never read."""
    labels = [0] * len(classes)
    try:
        objects = ET.parse(xml_file).getroot().findall("object")
    except (OSError, ET.ParseError) as error:
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
    except (OSError, ValueError, TypeError, MatReadError) as error:
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
    counts: Counter = field(default_factory=Counter)

    def image(self, image_id: str, list_file: Path) -> Path | None:
        jpeg = self.root / "JPEGImages" / f"{image_id}.jpg"
        if not jpeg.is_file() and self.sbd_root is not None and (self.sbd_root / "img" / f"{image_id}.jpg").is_file():
            return self.sbd_root / "img" / f"{image_id}.jpg"
        if not jpeg.is_file():
            self.problems.append(f"{list_file}: names image {image_id!r}, but {jpeg} does not exist")
            return None
        return jpeg

    def sbd_mask(self, image_id: str) -> tuple[str, np.ndarray] | None:
        """Convert SBD's mask to a PNG in the output; (stored path, mask) or None where there is none."""
        mat_file = self.sbd_root / "cls" / f"{image_id}.mat" if self.sbd_root is not None else None
        if mat_file is None or not mat_file.is_file():
            return None
        try:
            mask = read_sbd_mask(mat_file)
        except ValueError as error:
            self.problems.append(str(error))
            return None
        relative = f"{SBD_MASK_DIR}/{image_id}.png"
        (self.staging / SBD_MASK_DIR).mkdir(parents=True, exist_ok=True)
        save_mask(self.staging / relative, mask)
        self.counts["sbd_masks"] += 1
        return relative, mask

    def labels(self, image_id: str, sbd: tuple[str, np.ndarray] | None) -> list[int]:
        xml_file = self.root / "Annotations" / f"{image_id}.xml"
        if xml_file.is_file() or sbd is None:
            return read_xml_labels(xml_file, self.classes, self.problems, self.counts)
        self.counts["labels_from_sbd_mask"] += 1
        present = set(np.unique(sbd[1]).tolist())
        return [int(index + 1 in present) for index in range(len(self.classes))]

    def row(self, image_id: str, role: str, list_file: Path) -> dict | None:
        image = self.image(image_id, list_file)
        if image is None:
            return None
        voc_mask = self.root / "SegmentationClass" / f"{image_id}.png"
        sbd = None if voc_mask.is_file() else self.sbd_mask(image_id)
        if voc_mask.is_file():
            mask_path = store_path(voc_mask, self.base, self.staging)
        elif sbd is not None:
            mask_path = sbd[0]
        else:
            where = f"{voc_mask} nor {self.sbd_root / 'cls' / f'{image_id}.mat'}" if self.sbd_root else str(voc_mask)
            self.problems.append(f"{list_file}: image {image_id!r} has no mask (no {where})")
            mask_path = ""
        labels = self.labels(image_id, sbd)
        return {"image_id": image_id, "split": role, "image_path": store_path(image, self.base, self.staging), "mask_path": mask_path, "labels": labels}


def train_aug_ids(root: Path, sbd_root: Path, val_ids: set[str], counts: Counter, *, problems: list[str]) -> dict[str, Path]:
    """SBD train + SBD val + VOC train, minus the val split's images: {id: list file naming it}."""
    named: dict[str, Path] = {}
    for list_file in (sbd_root / "train.txt", sbd_root / "val.txt", root / "ImageSets" / "Segmentation" / "train.txt"):
        for image_id in read_split_ids(list_file, problems):
            named.setdefault(image_id, list_file)
    counts["train_aug_val_images_removed"] = sum(image_id in val_ids for image_id in named)
    return {image_id: named[image_id] for image_id in sorted(named) if image_id not in val_ids}


def _split_ids(reader: _Reader, splits: dict[str, str]) -> dict[str, dict[str, Path]]:
    """{role: {id: list file}}; train_aug is computed last, once the val ids are known."""
    ids: dict[str, dict[str, Path]] = {}
    for role, name in splits.items():
        if name != TRAIN_AUG:
            list_file = reader.root / "ImageSets" / "Segmentation" / f"{name}.txt"
            ids[role] = {image_id: list_file for image_id in read_split_ids(list_file, reader.problems)}
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
            ids[role] = train_aug_ids(reader.root, reader.sbd_root, others, reader.counts, problems=reader.problems)
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
) -> Source:
    """One row per image of each requested split; ``splits`` maps role -> VOC list name (or train_aug)."""
    reader = _Reader(root, classes, base, staging, sbd_root, problems)
    rows = []
    for role, role_ids in _split_ids(reader, splits).items():
        for image_id, list_file in role_ids.items():
            row = reader.row(image_id, role, list_file)
            if row is not None:
                rows.append(row)
    return Source(pd.DataFrame(rows, columns=list(COLUMNS)), classes, dict(reader.counts))
