"""COCO 2014 instances: contiguous class ids, rasterised masks (polygon, RLE, crowd), cache, memory."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bao.data.coco import rasterize, write_masks
from bao.data.manifest import read_manifest
from bao.data.palette import IGNORE_INDEX, read_mask
from bao.data.prepare import prepare_dataset
from dataset_fixtures import COCO_H, COCO_W, data_config, write_coco


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> Path:
    return write_coco(tmp_path_factory.mktemp("coco") / "coco")


def _prepare(coco: Path, out: Path, cache: Path) -> dict:
    return prepare_dataset(data_config("coco", coco, "train2014", "val2014", cache_dir=str(cache)), out)


def test_classes_labels_masks_and_skipped_images(coco, tmp_path):
    summary = _prepare(coco, tmp_path / "out", tmp_path / "cache")
    manifest = read_manifest(tmp_path / "out")
    # categories sorted by COCO id (person=1, car=3, dog=18) -> contiguous 1, 2, 3
    assert manifest.classes == ("person", "car", "dog")
    assert summary["source"]["skipped_no_annotation_train"] == 1 and summary["source"]["skipped_no_annotation_val"] == 1
    train = manifest.split("train").set_index("image_id")
    assert list(train.index) == ["COCO_train2014_000000000001", "COCO_train2014_000000000002"]
    assert train.at["COCO_train2014_000000000001", "labels"] == [1, 1, 0]
    assert train.at["COCO_train2014_000000000002", "labels"] == [0, 0, 1]  # crowd dogs + one dog
    first = read_mask(manifest.resolve(train.at["COCO_train2014_000000000001", "mask_path"]))
    assert first.shape == (COCO_H, COCO_W)
    assert first[5, 5] == 1 and first[10, 14] == 2 and first[0, 0] == 0  # polygon person, RLE car
    assert (first == 2).sum() == 48  # the RLE is exact: 6 x 8 pixels
    second = read_mask(manifest.resolve(train.at["COCO_train2014_000000000002", "mask_path"]))
    assert second[1, 1] == IGNORE_INDEX  # crowd region -> ignore
    assert second[4, 8] == 3  # a dog instance over the crowd region keeps its class
    assert second[14, 15] == 0
    assert set(np.unique(second).tolist()) == {0, 3, IGNORE_INDEX}
    assert summary["num_masks"] == {"train": 2, "val": 2}


def test_masks_are_cached_and_reused(coco, tmp_path):
    first = _prepare(coco, tmp_path / "a", tmp_path / "cache")
    # the fixture's val images carry the same annotations as train's: drawn once, then re-used
    assert first["source"]["masks_rasterised"] == 2 and first["source"]["masks_from_cache"] == 2
    second = _prepare(coco, tmp_path / "b", tmp_path / "cache")
    assert second["source"]["masks_from_cache"] == 4 and "masks_rasterised" not in second["source"]
    for name in ("COCO_val2014_000000000100", "COCO_train2014_000000000002"):
        assert (tmp_path / "a" / "masks" / f"{name}.png").read_bytes() == (tmp_path / "b" / "masks" / f"{name}.png").read_bytes()


def test_overlapping_instances_paint_the_small_one_on_top():
    big = [[0.0, 0.0, 20.0, 0.0, 20.0, 16.0, 0.0, 16.0]]
    small = [[8.0, 6.0, 12.0, 6.0, 12.0, 10.0, 8.0, 10.0]]
    for anns in ([(2, False, small), (1, False, big)], [(1, False, big), (2, False, small)]):
        mask = rasterize(16, 20, anns)
        assert mask[8, 10] == 2 and mask[1, 1] == 1


def _jobs(count: int, size: int = 96) -> list[tuple]:
    square = [[4.0, 4.0, size - 4.0, 4.0, size - 4.0, size - 4.0, 4.0, size - 4.0]]
    return [(f"img_{i}", size, size, [(1 + i % 3, False, square), (2, False, [[1.0 + i, 1.0, 9.0, 1.0, 9.0, 9.0]])]) for i in range(count)]


def _peak_bytes(tmp_path: Path, count: int) -> int:
    table = pd.DataFrame({"image_id": [job[0] for job in _jobs(count)], "mask_path": ""})
    staging = tmp_path / f"staging_{count}"
    tracemalloc.start()
    write_masks(_jobs(count), staging, tmp_path / f"cache_{count}", table)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert (table["mask_path"] != "").all()
    return peak


def test_rasterising_streams_memory_does_not_grow_with_the_image_count(tmp_path):
    _peak_bytes(tmp_path, 2)  # warm-up: first-use allocations (PIL plugins, caches) are not per image
    small, large = _peak_bytes(tmp_path, 10), _peak_bytes(tmp_path, 80)
    assert large < 1.5 * small + 200_000, (small, large)


def test_json_written_by_the_fixture_is_real_coco(coco):
    data = json.loads((coco / "annotations" / "instances_train2014.json").read_text())
    kinds = {(type(a["segmentation"]).__name__, a["iscrowd"], type(a["segmentation"].get("counts")).__name__ if isinstance(a["segmentation"], dict) else None) for a in data["annotations"]}
    assert kinds == {("list", 0, None), ("dict", 0, "str"), ("dict", 1, "list")}
