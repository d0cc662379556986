"""A plain folder: images/ + labels.csv (list or column form) + optional masks/ and classes.txt."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bao.data.folder import assign_splits
from bao.data.manifest import read_manifest
from bao.data.palette import read_mask
from bao.data.prepare import prepare_dataset
from dataset_fixtures import FOLDER_CLASSES, block_mask, data_config, write_folder, write_jpeg


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("folder") / "mine", count=8)


def test_list_form_with_split_column_classes_and_masks(folder, tmp_path):
    summary = prepare_dataset(data_config("folder", folder), tmp_path / "out")
    manifest = read_manifest(tmp_path / "out")
    assert manifest.classes == FOLDER_CLASSES  # classes.txt order, not sorted
    assert list(manifest.split("val")["image_id"]) == ["img_003", "img_007"]
    assert summary["num_images"] == {"train": 6, "val": 2}
    first = manifest.split("train").iloc[0]
    assert first["image_id"] == "img_000" and first["labels"] == [1, 0, 1]  # "cat;bird"
    mask = read_mask(manifest.resolve(first["mask_path"]))
    assert mask[8, 12] == 1 and mask[0, 0] == 3
    assert summary["num_masks"] == {"train": 6, "val": 2}


def test_column_form_without_classes_file_or_masks_and_random_split(tmp_path):
    root = tmp_path / "mine"
    rows = ["image,dog,cat"]
    for index in range(10):
        write_jpeg(root / "images" / f"p{index}.jpg", seed=index)
        rows.append(f"p{index}.jpg,{index % 2},{1 - index % 2 if index != 4 else 1}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    cfg = data_config("folder", root, folder={"split_column": None, "val_fraction": 0.3, "split_seed": 5})
    summary = prepare_dataset(cfg, tmp_path / "out")
    manifest = read_manifest(tmp_path / "out")
    assert manifest.classes == ("dog", "cat")  # header order
    assert summary["num_images"] == {"train": 7, "val": 3}
    assert summary["num_masks"] == {"train": 0, "val": 0}
    labels = dict(zip(manifest.table["image_id"], manifest.table["labels"]))
    assert labels["p4"] == [0, 1] and labels["p3"] == [1, 0]
    again = prepare_dataset(cfg, tmp_path / "again")  # a second run makes the same split
    assert again["num_images"] == summary["num_images"]
    assert read_manifest(tmp_path / "again").table.equals(manifest.table)


def test_list_form_without_classes_file_sorts_the_names(folder, tmp_path):
    import shutil

    copy = tmp_path / "mine"
    shutil.copytree(folder, copy)
    (copy / "classes.txt").unlink()
    shutil.rmtree(copy / "masks")  # masks need the class order of classes.txt; without it: sorted names
    prepare_dataset(data_config("folder", copy), tmp_path / "out")
    assert read_manifest(tmp_path / "out").classes == ("bird", "cat", "dog")


def test_random_split_is_seeded_and_never_leaves_a_side_empty():
    assert assign_splits(10, 0.2, 0) == assign_splits(10, 0.2, 0)
    assert assign_splits(10, 0.2, 0) != assign_splits(10, 0.2, 1)
    assert assign_splits(10, 0.2, 0).count("val") == 2
    assert assign_splits(3, 0.01, 0).count("val") == 1 and assign_splits(3, 0.99, 0).count("train") == 1


def test_rows_of_other_splits_are_skipped_and_counted(folder, tmp_path):
    import shutil

    copy = tmp_path / "mine"
    shutil.copytree(folder, copy)
    text = (copy / "labels.csv").read_text().replace("img_000.jpg,cat;bird,train", "img_000.jpg,cat;bird,test")
    (copy / "labels.csv").write_text(text)
    summary = prepare_dataset(data_config("folder", copy), tmp_path / "out")
    assert summary["source"]["rows_in_other_splits"] == 1 and summary["num_images"]["train"] == 5
    manifest = read_manifest(tmp_path / "out")
    rows = manifest.table.set_index("image_id")
    assert "img_000" not in rows.index  # the "test" row is not in the manifest
    assert np.array_equal(read_mask(manifest.resolve(rows.at["img_001", "mask_path"])), block_mask(2))  # the kept rows' masks are intact
