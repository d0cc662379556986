"""PASCAL VOC 2012 and SBD train_aug, read from fixtures in the exact on-disk formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bao.data.manifest import read_manifest
from bao.data.palette import read_mask
from bao.data.prepare import prepare_dataset
from bao.data.voc import VOC_CLASSES, read_sbd_mask
from dataset_fixtures import SBD_LABELS, VOC_IMAGES, block_mask, data_config, write_sbd, write_sbd_mat, write_voc


@pytest.fixture(scope="module")
def voc_sbd(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("voc")
    return write_voc(base / "VOC2012"), write_sbd(base / "benchmark_RELEASE" / "dataset")


def _labels(manifest, image_id: str) -> set[str]:
    row = manifest.table[manifest.table["image_id"] == image_id].iloc[0]
    return {name for name, on in zip(manifest.classes, row["labels"]) if on}


def test_voc_train_val_labels_masks_and_object_counts(voc_sbd, tmp_path):
    voc, _ = voc_sbd
    summary = prepare_dataset(data_config("voc", voc), tmp_path / "out")
    manifest = read_manifest(tmp_path / "out")
    assert manifest.classes == VOC_CLASSES and summary["num_classes"] == 20
    assert list(manifest.split("train")["image_id"]) == ["2007_000032", "2007_000039"]
    assert list(manifest.split("val")["image_id"]) == ["2007_000063", "2008_000002"]
    # difficult and truncated objects still make image labels; <part> names (head, hand) are not classes
    assert _labels(manifest, "2007_000032") == {"aeroplane", "person"}
    assert _labels(manifest, "2007_000063") == {"dog", "chair"}
    assert summary["source"]["objects"] == 6
    assert summary["source"]["objects_difficult"] == 2 and summary["source"]["objects_truncated"] == 2
    row = manifest.split("val").iloc[0]
    assert np.array_equal(read_mask(manifest.resolve(row["mask_path"])), block_mask(12))
    assert summary["num_masks"] == {"train": 2, "val": 2}


def test_train_aug_is_sbd_plus_voc_train_minus_val_with_sbd_masks(voc_sbd, tmp_path):
    voc, sbd = voc_sbd
    summary = prepare_dataset(data_config("voc", voc, "train_aug", sbd_root=str(sbd)), tmp_path / "out")
    manifest = read_manifest(tmp_path / "out")
    train = manifest.split("train").set_index("image_id")
    # SBD train + SBD val + VOC train, without 2008_000002, which is a VOC val image
    assert sorted(train.index) == ["2007_000032", "2007_000039", "2008_000003", "2008_000007"]
    assert summary["source"]["train_aug_val_images_removed"] == 1
    # VOC's own mask wins where it has one; SBD's GTcls.Segmentation fills in the others
    assert "SegmentationClass" in train.at["2007_000032", "mask_path"]
    assert train.at["2008_000003", "mask_path"] == "sbd_masks/2008_000003.png"
    assert summary["source"]["sbd_masks"] == 2
    for image_id in ("2008_000003", "2008_000007"):
        mask = read_mask(manifest.resolve(train.at[image_id, "mask_path"]))
        assert np.array_equal(mask, block_mask(SBD_LABELS[image_id], border=False))
        assert _labels(manifest, image_id) == {name for name in (o["name"] for o in VOC_IMAGES[image_id][0])}
    assert (tmp_path / "out" / "sbd_masks" / "2008_000007.png").is_file()


def test_sbd_struct_layout_is_read(tmp_path):
    segmentation = block_mask(7, border=False)
    write_sbd_mat(tmp_path / "a.mat", segmentation)
    assert np.array_equal(read_sbd_mask(tmp_path / "a.mat"), segmentation)


def test_train_aug_labels_from_sbd_mask_when_voc_has_no_xml(voc_sbd, tmp_path):
    import shutil

    voc, sbd = voc_sbd
    copy = tmp_path / "VOC2012"
    shutil.copytree(voc, copy)
    (copy / "Annotations" / "2008_000007.xml").unlink()
    summary = prepare_dataset(data_config("voc", copy, "train_aug", sbd_root=str(sbd)), tmp_path / "out")
    assert summary["source"]["labels_from_sbd_mask"] == 1
    assert _labels(read_manifest(tmp_path / "out"), "2008_000007") == {"bus"}
