"""The real DAG on a tiny plain-folder dataset whose training split has no masks (val has them).

One `dvc repro` shared by every test: nothing downstream of prepare knows the source format, the
folder's class names key the per-class IoU, and the stages that need training masks write null
metrics with a flag instead of failing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from dataset_fixtures import FOLDER_CLASSES, write_folder
from pipeline_utils import make_repo_copy, run

SIZE = (64, 64)
LOADER = {"epochs": 1, "batch_size": 8, "crop_size": 64, "resize_long": [56, 72]}


@pytest.fixture(scope="module")
def repro(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("folder_pipeline")
    root = write_folder(base / "my_images", count=12, masks="val", size=SIZE)
    overrides = {
        "data": {"dataset": "folder", "root": str(root), "folder": {"split_column": "split"}},
        "train_cam": LOADER, "bao": LOADER, "train_seg": LOADER,
        "pseudo_label": {"scales": [64], "flip": False, "thresholds": [0.3, 0.6]},
    }
    repo = make_repo_copy(base / "repo", overrides)
    run(["dvc", "repro"], repo, timeout=900)
    return repo


def _metrics(repo: Path, path: str) -> dict:
    return json.loads((repo / path).read_text())


def test_prepare_reads_the_folder(repro):
    prepare = _metrics(repro, "metrics/prepare.json")
    assert prepare["num_images"] == {"train": 9, "val": 3}
    assert prepare["num_masks"] == {"train": 0, "val": 3}
    assert list(prepare["images_per_class"]) == list(FOLDER_CLASSES)


def test_stages_without_training_masks_write_null_metrics_with_a_flag(repro):
    sweep = _metrics(repro, "results/threshold_sweep.json")
    assert sweep["ground_truth_available"] is False and sweep["best"] is None
    pseudo = _metrics(repro, "metrics/pseudo_label.json")
    assert pseudo["ground_truth_available"] is False
    assert pseudo["pseudo_miou_bao"] is None and pseudo["baseline_best_miou"] is None
    assert len(list((repro / "results/pseudo_labels").glob("*.png"))) == 9
    evaluation = _metrics(repro, "metrics/evaluate.json")
    assert evaluation["train_ground_truth_available"] is False and evaluation["pseudo_label_miou"] is None


def test_val_masks_are_scored_with_the_folder_class_names(repro):
    evaluation = _metrics(repro, "metrics/evaluate.json")
    assert evaluation["val_ground_truth_available"] is True
    assert math.isfinite(evaluation["val_miou"]) and 0.0 <= evaluation["val_miou"] <= 1.0
    assert set(evaluation["val_per_class_iou"]) == {"background", *FOLDER_CLASSES}
    assert len(list((repro / "results/val_predictions").glob("*.png"))) == 3


def test_dvc_reads_the_null_metrics(repro):
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repro).stdout)
    [workspace] = shown.values()  # {"": {"data": {file: {"data": metrics} or {"error": ...}}}}
    pseudo = workspace["data"]["metrics/pseudo_label.json"]
    assert "error" not in pseudo, pseudo
    assert pseudo["data"]["ground_truth_available"] is False  # parsed: the null mIoUs are valid JSON
    assert pseudo["data"].get("pseudo_miou_bao") is None  # (dvc leaves nulls out of what it shows)
