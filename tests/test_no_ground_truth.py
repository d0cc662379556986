"""A folder dataset without masks: the scoring stages' functions run and say that no ground truth exists."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from bao.config import CrfConfig, ModelConfig, PseudoLabelConfig
from bao.data.manifest import read_manifest
from bao.data.prepare import prepare_dataset
from bao.infer.pipeline import bao_pseudo_labels, threshold_sweep
from bao.infer.report import comparison_metrics, no_ground_truth_metrics, sweep_plot_rows
from bao.infer.segment import evaluation_metrics, score_predictions
from bao.models import create_bao_net, create_cam_net
from dataset_fixtures import data_config, write_folder

CFG = PseudoLabelConfig(scales=(32,), flip=False, thresholds=(0.2, 0.5))
MODEL = ModelConfig(backbone="resnet18", pretrained=False, output_stride=16)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    base = tmp_path_factory.mktemp("nogt")
    prepare_dataset(data_config("folder", write_folder(base / "mine", count=4, masks=False)), base / "out")
    return read_manifest(base / "out")


def test_sweep_and_comparison_are_null_with_a_flag(manifest):
    torch.manual_seed(0)
    sweep = threshold_sweep(create_cam_net(MODEL, manifest.num_classes), manifest, CFG, torch.device("cpu"))
    assert sweep["ground_truth_available"] is False and sweep["best"] is None
    assert [point["miou"] for point in sweep["curve"]] == [None, None]
    metrics = comparison_metrics(None, sweep)
    assert metrics["ground_truth_available"] is False
    assert metrics["pseudo_miou_bao"] is None and metrics["baseline_best_miou"] is None
    assert metrics["baseline_best_t"] is None and metrics["bao_per_class_iou"] is None
    json.dumps(metrics, allow_nan=False)  # valid JSON for DVC: null, never NaN
    rows = sweep_plot_rows(sweep, None)
    assert [row["threshold"] for row in rows] == [0.2, 0.5] and all(row["baseline_miou"] is None for row in rows)


def test_threshold_labels_are_written_without_ground_truth(manifest, tmp_path: Path):
    torch.manual_seed(0)
    sweep = threshold_sweep(create_cam_net(MODEL, manifest.num_classes), manifest, CFG, torch.device("cpu"), labels_out=tmp_path)
    assert sweep["ground_truth_available"] is False and sweep["per_image_best_t"] is None
    assert sorted(p.stem for p in tmp_path.glob("*.png")) == sorted(manifest.split("train")["image_id"])


def test_pseudo_labels_are_written_without_ground_truth(manifest, tmp_path: Path):
    torch.manual_seed(0)
    crf = CrfConfig(enabled=False, iterations=10, gt_prob=0.7, gaussian_sxy=3, gaussian_compat=3,
                    bilateral_sxy=50, bilateral_srgb=5, bilateral_compat=10)
    scores = bao_pseudo_labels(create_bao_net(MODEL, manifest.num_classes), manifest, CFG, crf=crf, device=torch.device("cpu"), out_dir=tmp_path)
    alignment = scores.pop("alignment")  # measured without masks, so there is one
    assert alignment["mode"] == "calibrated" and alignment["images"] == len(manifest.split("train"))
    assert scores == {"bao": None, "bao_crf": None, "diagnosis": None, "sweep": None}
    assert sorted(p.stem for p in tmp_path.glob("*.png")) == sorted(manifest.split("train")["image_id"])
    assert score_predictions(manifest, "train", tmp_path) is None


def test_evaluate_metrics_flag_each_split_without_masks():
    metrics = evaluation_metrics(None, None)
    assert metrics["val_miou"] is None and metrics["pseudo_label_miou"] is None
    assert metrics["val_ground_truth_available"] is False and metrics["train_ground_truth_available"] is False
    val = {"miou": 0.5, "pixel_accuracy": 0.9, "per_class_iou": {"background": 0.5}}
    partial = evaluation_metrics(val, None)
    assert partial["val_miou"] == 0.5 and partial["val_ground_truth_available"] is True
    assert partial["pseudo_label_miou"] is None and partial["train_ground_truth_available"] is False


def test_with_masks_the_comparison_says_ground_truth_was_available():
    best = {"miou": 0.4, "pixel_accuracy": 0.8, "per_class_iou": {"background": 0.4}}
    curve = [{"threshold": 0.45, "miou": 0.3, "foreground_recall": 0.9, "foreground_precision": 0.2},
             {"threshold": 0.5, "miou": 0.4, "foreground_recall": 0.7, "foreground_precision": 0.3}]
    sweep = {"ground_truth_available": True, "curve": curve, "best_threshold": 0.5, "best": best}
    bao = {"miou": 0.6, "pixel_accuracy": 0.9, "per_class_iou": {}, "foreground_recall": 0.6, "foreground_precision": 0.5}
    metrics = comparison_metrics(bao, sweep)
    assert metrics["ground_truth_available"] is True and math.isclose(metrics["bao_minus_best_baseline"], 0.2)
    assert math.isclose(metrics["bao_minus_mid_baseline"], 0.2)
    assert (metrics["foreground_recall_mid_t"], metrics["foreground_precision_mid_t"]) == (0.7, 0.3)
    assert (metrics["foreground_recall_bao"], metrics["foreground_precision_bao"]) == (0.6, 0.5)
    assert no_ground_truth_metrics()["foreground_recall_bao"] is None
