"""Writers of tiny datasets in each exact on-disk format prepare reads (VOC, SBD, COCO, folder)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.sparse as sparse
from PIL import Image
from scipy.io import savemat

from bao.config import DataConfig, FolderConfig, SyntheticConfig
from bao.data.palette import save_mask

WIDTH, HEIGHT = 24, 16


def write_jpeg(path: Path, width: int = WIDTH, height: int = HEIGHT, *, seed: int = 0, quality: int = 90) -> Path:
    """A noisy RGB JPEG (noise keeps the file realistic: JPEG is not tiny for flat colour)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG", quality=quality)
    return path


def block_mask(label: int, width: int = WIDTH, height: int = HEIGHT, border: bool = True) -> np.ndarray:
    """Background with one centred rectangle of ``label``, and a VOC-style 255 border around it."""
    mask = np.zeros((height, width), dtype=np.uint8)
    top, bottom, left, right = height // 4, 3 * height // 4, width // 4, 3 * width // 4
    mask[top:bottom, left:right] = 255 if border else label
    mask[top + 1:bottom - 1, left + 1:right - 1] = label
    return mask


def voc_xml(image_id: str, objects: list[dict], width: int = WIDTH, height: int = HEIGHT) -> str:
    """A VOC 2012 annotation as the devkit ships it; each object may set pose/truncated/difficult/parts."""
    parts = []
    for obj in objects:
        layout = "".join(
            f"<part><name>{part}</name><bndbox><xmin>7</xmin><ymin>5</ymin><xmax>9</xmax><ymax>7</ymax></bndbox></part>"
            for part in obj.get("parts", ())
        )
        parts.append(
            f"\t<object>\n\t\t<name>{obj['name']}</name>\n\t\t<pose>{obj.get('pose', 'Unspecified')}</pose>\n"
            f"\t\t<truncated>{obj.get('truncated', 0)}</truncated>\n\t\t<difficult>{obj.get('difficult', 0)}</difficult>\n"
            f"\t\t<bndbox>\n\t\t\t<xmin>7</xmin>\n\t\t\t<ymin>5</ymin>\n\t\t\t<xmax>17</xmax>\n\t\t\t<ymax>11</ymax>\n\t\t</bndbox>\n"
            f"{layout}\t</object>\n"
        )
    return (
        f"<annotation>\n\t<folder>VOC2012</folder>\n\t<filename>{image_id}.jpg</filename>\n"
        "\t<source>\n\t\t<database>The VOC2007 Database</database>\n\t\t<annotation>PASCAL VOC2007</annotation>\n"
        "\t\t<image>flickr</image>\n\t</source>\n"
        f"\t<size>\n\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n\t\t<depth>3</depth>\n\t</size>\n"
        f"\t<segmented>1</segmented>\n{''.join(parts)}</annotation>\n"
    )


# id -> (objects in the XML, class index painted in the mask or None for no VOC mask)
VOC_IMAGES = {
    "2007_000032": ([{"name": "aeroplane", "pose": "Frontal"}, {"name": "person", "truncated": 1, "parts": ["head", "hand"]}], 1),
    "2007_000039": ([{"name": "tvmonitor", "difficult": 1}], 20),
    "2007_000063": ([{"name": "dog"}, {"name": "chair", "difficult": 1, "truncated": 1}], 12),
    "2008_000002": ([{"name": "cat"}], 8),
    "2008_000003": ([{"name": "train"}], None),  # only in SBD: mask from cls/*.mat
    "2008_000007": ([{"name": "bus"}], None),
}
VOC_TRAIN = ["2007_000032", "2007_000039"]
VOC_VAL = ["2007_000063", "2008_000002"]
SBD_TRAIN = ["2007_000032", "2008_000002", "2008_000003"]  # 2008_000002 is VOC val: must be dropped
SBD_VAL = ["2008_000007"]
SBD_LABELS = {"2008_000003": 19, "2008_000007": 6, "2008_000002": 8, "2007_000032": 1}


def write_voc(root: Path) -> Path:
    """VOC2012/ with JPEGImages, Annotations, SegmentationClass and ImageSets/Segmentation lists."""
    for index, (image_id, (objects, label)) in enumerate(VOC_IMAGES.items()):
        write_jpeg(root / "JPEGImages" / f"{image_id}.jpg", seed=index)
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{image_id}.xml").write_text(voc_xml(image_id, objects))
        if label is not None:
            (root / "SegmentationClass").mkdir(parents=True, exist_ok=True)
            save_mask(root / "SegmentationClass" / f"{image_id}.png", block_mask(label))
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "train.txt").write_text("\n".join(VOC_TRAIN) + "\n")
    (lists / "val.txt").write_text("\n".join(VOC_VAL) + "\n")
    return root


def write_sbd_mat(path: Path, segmentation: np.ndarray, num_classes: int = 20) -> None:
    """A cls/*.mat as SBD ships it: struct GTcls with Boundaries (cell of sparse), Segmentation, CategoriesPresent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    boundaries = np.empty((num_classes, 1), dtype=object)
    for index in range(num_classes):
        boundaries[index, 0] = sparse.csc_matrix(segmentation == index + 1)
    present = np.array([[v] for v in np.unique(segmentation) if 0 < v <= num_classes], dtype=np.uint8)
    savemat(path, {"GTcls": {"Boundaries": boundaries, "Segmentation": segmentation.astype(np.uint8), "CategoriesPresent": present}})


def write_sbd(root: Path) -> Path:
    """benchmark_RELEASE/dataset/ with cls/*.mat, img/*.jpg, train.txt and val.txt."""
    for index, (image_id, label) in enumerate(SBD_LABELS.items()):
        write_sbd_mat(root / "cls" / f"{image_id}.mat", block_mask(label, border=False))
        write_jpeg(root / "img" / f"{image_id}.jpg", seed=100 + index)
    (root / "train.txt").write_text("\n".join(SBD_TRAIN) + "\n")
    (root / "val.txt").write_text("\n".join(SBD_VAL) + "\n")
    return root


COCO_CATEGORIES = [  # COCO ids have gaps; contiguous ids follow id order: person=1, car=2, dog=3
    {"supercategory": "animal", "id": 18, "name": "dog"},
    {"supercategory": "person", "id": 1, "name": "person"},
    {"supercategory": "vehicle", "id": 3, "name": "car"},
]
COCO_W, COCO_H = 20, 16


def _rle_counts(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE: run lengths in column-major order, starting with a 0-run."""
    flat = mask.flatten(order="F").astype(np.uint8)
    counts, current, run = [], 0, 0
    for value in flat:
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    counts.append(run)
    return counts


def coco_split(split: str, first_id: int) -> dict:
    """Three images: polygon person + compressed-RLE car; crowd of dogs + polygon dog; no annotation."""
    from pycocotools import mask as mask_utils

    car = np.zeros((COCO_H, COCO_W), dtype=np.uint8, order="F")
    car[8:14, 10:18] = 1
    car_rle = mask_utils.encode(np.asfortranarray(car))
    crowd = np.zeros((COCO_H, COCO_W), dtype=np.uint8)
    crowd[0:6, 0:20] = 1
    images = [
        {"license": 1, "file_name": f"COCO_{split}_{first_id + i:012d}.jpg", "coco_url": "", "height": COCO_H,
         "width": COCO_W, "date_captured": "2013-11-14 16:28:13", "flickr_url": "", "id": first_id + i}
        for i in range(3)
    ]
    annotations = [
        {"segmentation": [[2.0, 2.0, 8.0, 2.0, 8.0, 10.0, 2.0, 10.0]], "area": 48.0, "iscrowd": 0,
         "image_id": first_id, "bbox": [2.0, 2.0, 6.0, 8.0], "category_id": 1, "id": 10 * first_id + 1},
        {"segmentation": {"size": [COCO_H, COCO_W], "counts": car_rle["counts"].decode()}, "area": 48.0, "iscrowd": 0,
         "image_id": first_id, "bbox": [10.0, 8.0, 8.0, 6.0], "category_id": 3, "id": 10 * first_id + 2},
        {"segmentation": {"counts": _rle_counts(crowd), "size": [COCO_H, COCO_W]}, "area": 120.0, "iscrowd": 1,
         "image_id": first_id + 1, "bbox": [0.0, 0.0, 20.0, 6.0], "category_id": 18, "id": 10 * first_id + 3},
        {"segmentation": [[4.0, 3.0, 12.0, 3.0, 12.0, 12.0, 4.0, 12.0]], "area": 72.0, "iscrowd": 0,
         "image_id": first_id + 1, "bbox": [4.0, 3.0, 8.0, 9.0], "category_id": 18, "id": 10 * first_id + 4},
    ]
    return {
        "info": {"description": "tiny COCO", "year": 2014}, "licenses": [{"id": 1, "name": "x", "url": ""}],
        "images": images, "annotations": annotations, "categories": COCO_CATEGORIES,
    }


def write_coco(root: Path, splits: dict[str, int] | None = None) -> Path:
    """``<split>/`` JPEGs and ``annotations/instances_<split>.json`` for train2014 and val2014."""
    splits = splits or {"train2014": 1, "val2014": 100}
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split, first_id in splits.items():
        data = coco_split(split, first_id)
        for image in data["images"]:
            write_jpeg(root / split / image["file_name"], COCO_W, COCO_H, seed=image["id"])
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root


FOLDER_CLASSES = ("cat", "dog", "bird")


def write_folder(root: Path, count: int = 10, masks: bool | str = True, size: tuple[int, int] = (WIDTH, HEIGHT)) -> Path:
    """images/ + labels.csv (list form, split column) + classes.txt + masks/ (True, False or "val")."""
    lines = ["image,labels,split"]
    for index in range(count):
        name, label = f"img_{index:03d}", index % len(FOLDER_CLASSES) + 1
        split = "val" if index % 4 == 3 else "train"
        write_jpeg(root / "images" / f"{name}.jpg", *size, seed=index)
        names = [FOLDER_CLASSES[label - 1]] + (["bird"] if index % 5 == 0 and label != 3 else [])
        lines.append(f"{name}.jpg,{';'.join(names)},{split}")
        if masks is True or (masks == split):
            mask = block_mask(label, *size)
            if "bird" in names and label != 3:
                mask[0:3, 0:4] = 3
            (root / "masks").mkdir(parents=True, exist_ok=True)
            save_mask(root / "masks" / f"{name}.png", mask)
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("\n".join(FOLDER_CLASSES) + "\n")
    return root


def data_config(dataset: str, root: Path, train_split: str = "train", val_split: str = "val", **extra) -> DataConfig:
    folder = extra.pop("folder", {})
    return DataConfig(
        dataset=dataset, root=str(root), train_split=train_split, val_split=val_split,
        synthetic=SyntheticConfig(num_train=2, num_val=1, image_size=32, num_classes=2),
        folder=FolderConfig(**({"split_column": "split"} | folder)), **extra,
    )
