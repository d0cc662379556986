"""COCO 2014 instances: ``<split>/`` images and ``annotations/instances_<split>.json``.

The categories (80 in COCO, ids 1..90 with gaps) become contiguous class ids 1..K in id order;
0 is background. Image labels are the categories of all its annotations, crowd ones included.
Images without any annotation are skipped and counted. Masks are rasterised with pycocotools
from polygons or RLE: instances are painted largest first so small objects stay visible, and
crowd regions become 255 (ignore) where no instance covers them.

Rasterising is the costly part, so it runs only after validation passed, one image at a time
(memory stays flat), and each mask is cached under ``<cache_dir>/coco_masks/`` by a hash of its
annotations: a re-run, or another params change, re-uses it instead of drawing it again.

Each ``file_name`` must be a plain file name in ``<split>/`` (no ``..`` or separator); a bad one
is a listed problem naming the JSON entry.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from pycocotools import mask as mask_utils

from bao.data.manifest import COLUMNS, stored_path
from bao.data.palette import IGNORE_INDEX, save_mask
from bao.data.source import ANYWHERE, RootGuard, Source, image_name_problem, inside, read_text
from bao.io import atomic_path

REQUIRED_KEYS = {  # section -> {key: expected JSON type}
    "images": {"id": int, "file_name": str, "height": int, "width": int},
    "annotations": {"image_id": int, "category_id": int, "segmentation": (list, dict), "iscrowd": int},
    "categories": {"id": int, "name": str},
}
MASK_DIR = "masks"
CACHE_SUBDIR = "coco_masks"
CACHE_VERSION = "coco-mask-v1"  # bump when the rasterisation rule changes


def annotation_file(root: Path, split: str) -> Path:
    return root / "annotations" / f"instances_{split}.json"


def _load_json(path: Path, problems: list[str], guard: RootGuard = ANYWHERE) -> dict | None:
    if not path.is_file():
        problems.append(f"{path}: COCO annotation file not found")
        return None
    text = read_text(path, problems, guard)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as error:
        problems.append(f"{path}: not valid JSON ({error})")
        return None
    if not isinstance(data, dict):
        problems.append(f"{path}: expected a JSON object at the top level")
        return None
    return data


def _key_problem(entry, key: str, kind) -> str | None:
    if not isinstance(entry, dict) or key not in entry:
        return f"is missing key {key!r}"
    value = entry[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        return f"has key {key!r} of type {type(value).__name__}"
    return None


def check_keys(path: Path, data: dict, problems: list[str]) -> bool:
    """Every required list and entry key is present with its JSON type; one problem per kind of
    defect, naming the first entry and how many more share it."""
    found: dict[tuple[str, str], list[int]] = defaultdict(list)
    for section, keys in REQUIRED_KEYS.items():
        entries = data.get(section)
        if not isinstance(entries, list):
            problems.append(f"{path}: missing or non-list key {section!r}")
            found[(section, "")].append(0)
            continue
        for position, entry in enumerate(entries):
            for key, kind in keys.items():
                problem = _key_problem(entry, key, kind)
                if problem:
                    found[(section, problem)].append(position)
    for (section, problem), positions in found.items():
        if problem:
            more = f" (and {len(positions) - 1} more entries)" if len(positions) > 1 else ""
            problems.append(f"{path}: {section}[{positions[0]}] {problem}{more}")
    return not found


def _segmentation_problem(segmentation, crowd: bool, size: tuple[int, int]) -> str | None:
    """Why a polygon list or RLE cannot be rasterised at ``size`` (H, W), or None."""
    if isinstance(segmentation, dict):
        if not isinstance(segmentation.get("counts"), (list, str)) or "size" not in segmentation:
            return "RLE segmentation needs 'counts' (list or string) and 'size'"
        if segmentation["size"] != list(size):
            return f"RLE size {segmentation['size']} differs from the image's [height, width] {list(size)}"
        return None
    if crowd:
        return "a crowd annotation (iscrowd=1) must be an RLE"
    if not isinstance(segmentation, list) or not segmentation:
        return "segmentation must be a non-empty list of polygons or an RLE"
    for polygon in segmentation:
        if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2 or not all(isinstance(v, (int, float)) for v in polygon):
            return "each polygon must be a list of at least 3 x,y number pairs"
    return None


def categories_of(path: Path, data: dict, problems: list[str]) -> dict[int, str]:
    categories = {int(c["id"]): str(c["name"]) for c in data["categories"]}
    if not categories:
        problems.append(f"{path}: 'categories' is empty")
    return dict(sorted(categories.items()))


def _annotations_by_image(path: Path, data: dict, label_of: dict[int, int], problems: list[str]) -> dict[int, list]:
    """{image id: [(class index 1..K, crowd, segmentation)]}, checking every annotation."""
    sizes = {int(image["id"]): (int(image["height"]), int(image["width"])) for image in data["images"]}
    by_image: dict[int, list] = defaultdict(list)
    for position, ann in enumerate(data["annotations"]):
        where = f"{path}: annotations[{position}] (id {ann.get('id')})"
        image_id, category = int(ann["image_id"]), int(ann["category_id"])
        if image_id not in sizes:
            problems.append(f"{where}: refers to unknown image id {image_id}")
            continue
        if category not in label_of:
            problems.append(f"{where}: unknown category id {category}")
            continue
        problem = _segmentation_problem(ann["segmentation"], bool(ann["iscrowd"]), sizes[image_id])
        if problem:
            problems.append(f"{where}: {problem}")
            continue
        by_image[image_id].append((label_of[category], bool(ann["iscrowd"]), ann["segmentation"]))
    return by_image


def read_coco_split(
    root: Path, split: str, role: str, label_of: dict[int, int], *, data: dict, base: Path, problems: list[str], counts: Counter
) -> tuple[list[dict], list[tuple]]:
    """Manifest rows (masks still to draw) and the rasterisation jobs of one split."""
    path = annotation_file(root, split)
    by_image = _annotations_by_image(path, data, label_of, problems)
    rows, jobs = [], []
    for position, image in enumerate(data["images"]):
        anns = by_image.get(int(image["id"]))
        if not anns:
            counts[f"skipped_no_annotation_{role}"] += 1
            continue
        name = str(image["file_name"])
        unsafe = image_name_problem(name)
        if unsafe:
            problems.append(f"{path}: images[{position}] file_name {name!r} {unsafe}; it must be a file name in {split}/")
            continue
        image_id = Path(name).stem
        height, width = int(image["height"]), int(image["width"])
        labels = [0] * len(label_of)
        for label, _, _ in anns:
            labels[label - 1] = 1
        rows.append({
            "image_id": image_id, "split": role, "image_path": stored_path(root / split / name, base),
            "mask_path": "", "labels": labels, "height": height, "width": width, "origin": f"{path}: images[{position}]",
        })
        jobs.append((image_id, height, width, anns))
    return rows, jobs


def read_coco(
    root: Path, splits: dict[str, str], base: Path, problems: list[str], *, cache_dir: Path, guard: RootGuard = ANYWHERE
) -> Source:
    """Rows of every split; classes from the train split's categories, which val must match."""
    paths = {role: annotation_file(root, split) for role, split in splits.items()}
    valid = {}
    for role, path in paths.items():
        data = _load_json(path, problems, guard)
        if data is not None and check_keys(path, data, problems):
            valid[role] = data
    if len(valid) != len(splits):
        return Source(pd.DataFrame(columns=[*COLUMNS, "height", "width", "origin"]), ())
    categories = {role: categories_of(paths[role], data, problems) for role, data in valid.items()}
    train = categories["train"]
    for role, found in categories.items():
        if found != train:
            problems.append(f"{paths[role]}: categories differ from those of {paths['train']}")
    label_of = {category: index + 1 for index, category in enumerate(train)}
    counts: Counter = Counter()
    rows, jobs = [], []
    for role, split in splits.items():
        split_rows, split_jobs = read_coco_split(root, split, role, label_of, data=valid.pop(role), base=base, problems=problems, counts=counts)
        rows += split_rows
        jobs += split_jobs
    # Only the per-image annotation lists stay in memory for rasterising; the JSON is released.

    def finish(staging: Path, table: pd.DataFrame) -> dict:
        return write_masks(jobs, staging, cache_dir, table)

    table = pd.DataFrame(rows, columns=[*COLUMNS, "height", "width", "origin"])
    return Source(table, tuple(train.values()), dict(counts), finish)


def rasterize(height: int, width: int, anns: list[tuple[int, bool, object]]) -> np.ndarray:
    """(H, W) uint8 class mask: instances largest first, then crowd regions as 255 on background."""
    instances, crowd = [], []
    for label, is_crowd, segmentation in anns:
        rle = _to_rle(segmentation, height, width)
        (crowd if is_crowd else instances).append((float(mask_utils.area(rle)), label, rle))
    mask = np.zeros((height, width), dtype=np.uint8)
    for _, label, rle in sorted(instances, key=lambda item: -item[0]):
        mask[_decode(rle)] = label
    for _, _, rle in crowd:
        mask[_decode(rle) & (mask == 0)] = IGNORE_INDEX
    return mask


def _decode(rle: dict) -> np.ndarray:
    with warnings.catch_warnings():  # pycocotools' numpy-2 copy= deprecation notice, harmless here
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle) > 0


def _to_rle(segmentation, height: int, width: int) -> dict:
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation["counts"], list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return {"size": list(segmentation["size"]), "counts": segmentation["counts"].encode() if isinstance(segmentation["counts"], str) else segmentation["counts"]}


def cache_key(height: int, width: int, anns: list) -> str:
    payload = json.dumps([CACHE_VERSION, height, width, anns], sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(payload.encode()).hexdigest()


def _cached_masks(jobs: list[tuple], cache_dir: Path, counts: Counter) -> Iterator[tuple[str, Path]]:
    """(image id, cached mask PNG) one at a time, drawing only those not in the cache yet."""
    for image_id, height, width, anns in jobs:
        key = cache_key(height, width, anns)
        cached = cache_dir / CACHE_SUBDIR / key[:2] / f"{key}.png"
        if cached.is_file():
            counts["masks_from_cache"] += 1
        else:
            cached.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(cached) as temp:
                save_mask(temp, rasterize(height, width, anns))
            counts["masks_rasterised"] += 1
        yield image_id, cached


def write_masks(jobs: list[tuple], staging: Path, cache_dir: Path, table: pd.DataFrame) -> dict:
    """Copy each image's mask from the cache into ``staging/masks``; set the table's mask paths."""
    counts: Counter = Counter()
    (staging / MASK_DIR).mkdir(parents=True, exist_ok=True)
    mask_paths = {}
    for image_id, cached in _cached_masks(jobs, cache_dir, counts):
        relative = f"{MASK_DIR}/{image_id}.png"
        shutil.copyfile(cached, inside(staging, staging / relative))
        mask_paths[image_id] = relative
    table["mask_path"] = table["image_id"].map(mask_paths).fillna("")
    return dict(counts)
