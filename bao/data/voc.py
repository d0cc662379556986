"""PASCAL VOC 2012 layout: JPEGImages/, Annotations/*.xml, SegmentationClass/*.png, ImageSets/."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd

from bao.data.manifest import stored_path

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)


def read_split_ids(list_file: Path, problems: list[str]) -> list[str]:
    if not list_file.is_file():
        problems.append(f"{list_file}: split list file not found")
        return []
    ids = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
    if not ids:
        problems.append(f"{list_file}: split list is empty")
    return ids


def read_xml_labels(xml_file: Path, classes: tuple[str, ...], problems: list[str]) -> list[int]:
    """Multi-hot labels from every <object><name>, difficult and truncated ones included."""
    labels = [0] * len(classes)
    try:
        names = [node.text.strip() for node in ET.parse(xml_file).getroot().iter("name") if node.text]
    except (OSError, ET.ParseError) as error:
        problems.append(f"{xml_file}: cannot read annotation ({error})")
        return labels
    for name in names:
        if name not in classes:
            if name not in _XML_PART_NAMES:
                problems.append(f"{xml_file}: unknown class name {name!r}")
            continue
        labels[classes.index(name)] = 1
    return labels


# <part><name>head</name> of VOC's person layout annotations are not classes.
_XML_PART_NAMES = {"head", "hand", "foot"}


def read_voc(
    root: Path, splits: dict[str, str], classes: tuple[str, ...], base: Path, problems: list[str]
) -> pd.DataFrame:
    """One row per image of each requested split; ``splits`` maps role -> VOC list name."""
    rows = []
    for role, list_name in splits.items():
        for image_id in read_split_ids(root / "ImageSets" / "Segmentation" / f"{list_name}.txt", problems):
            mask = root / "SegmentationClass" / f"{image_id}.png"
            rows.append({
                "image_id": image_id,
                "split": role,
                "image_path": stored_path(root / "JPEGImages" / f"{image_id}.jpg", base),
                "mask_path": stored_path(mask, base) if mask.is_file() else "",
                "labels": read_xml_labels(root / "Annotations" / f"{image_id}.xml", classes, problems),
            })
    return pd.DataFrame(rows, columns=["image_id", "split", "image_path", "mask_path", "labels"])
