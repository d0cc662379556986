"""The per-image best background threshold and the per-image oracle, hand-computed on tiny images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bao.config import PseudoLabelConfig
from bao.data.manifest import read_manifest
from bao.infer.per_image import PerImageBestT, best_threshold_index, image_miou
from bao.infer.pipeline import threshold_sweep
from bao.infer.pseudo import threshold_pseudo_labels
from bao.infer.report import comparison_metrics, per_image_plot_rows
from bao.metrics import confusion_counts
from test_alignment import BATCHES_OF_TWO, BrightSquareNet, label_offsets

THRESHOLDS = (0.2, 0.5, 0.8)
# (normalised class map, ground truth) of three 1x4 images, one class
IMAGES = [
    ([0.9, 0.6, 0.3, 0.1], [1, 1, 0, 0]),  # t: .2 -> .583, .5 -> 1.0, .8 -> .583: best .5
    ([0.9, 0.7, 0.6, 0.0], [1, 0, 0, 0]),  # .2 -> .333, .5 -> .333, .8 -> 1.0: best .8
    ([0.3, 0.25, 0.1, 0.0], [1, 1, 0, 0]),  # .2 -> 1.0, .5 -> .25 (class in gt, IoU 0), .8 -> .25: best .2
]


def _counts(cam: list[float], gt: list[int]) -> np.ndarray:
    predictions = threshold_pseudo_labels(torch.tensor([[cam]]), THRESHOLDS)
    return np.stack([confusion_counts(np.array([gt], np.uint8), prediction, 2) for prediction in predictions])


def test_image_miou_counts_only_classes_in_its_ground_truth_or_prediction():
    assert image_miou(_counts(*IMAGES[0])[0]) == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert image_miou(_counts(*IMAGES[2])[1]) == pytest.approx((2 / 4 + 0) / 2)
    only_background = confusion_counts(np.zeros((1, 3), np.uint8), np.zeros((1, 3), np.uint8), 3)
    assert image_miou(only_background) == 1.0  # classes 1 and 2 are in neither: not averaged
    assert np.isnan(image_miou(np.zeros((2, 2), np.int64)))  # an all-ignored image


def test_best_t_per_image_and_the_per_image_oracle():
    assert [best_threshold_index(_counts(*image)) for image in IMAGES] == [1, 2, 0]
    # a tie goes to the smallest t
    assert best_threshold_index(np.stack([np.eye(2, dtype=np.int64)] * 3)) == 0
    tracker = PerImageBestT(THRESHOLDS, 2)
    for image in IMAGES:
        tracker.add(_counts(*image))
    summary = tracker.summary(["background", "thing"])
    assert summary["images"] == 3
    assert summary["mean"] == pytest.approx(0.5)
    assert summary["std"] == pytest.approx(np.sqrt((0.3**2 + 0 + 0.3**2) / 3))
    assert summary["p10"] == pytest.approx(0.2 + 0.2 * 0.3) and summary["p90"] == pytest.approx(0.5 + 0.8 * 0.3)
    assert summary["oracle_miou"] == 1.0  # every image is perfect at its own t
    assert [row["images"] for row in summary["histogram"]] == [1, 1, 1]
    # no single t reaches it: at .5 image 2 and 3 are wrong
    single = sum(_counts(*image)[1] for image in IMAGES)
    tp = np.diag(single)
    assert (tp / (single.sum(0) + single.sum(1) - tp)).mean() < 0.7


def test_the_sweep_reports_each_images_best_t(tmp_path):
    label_offsets(tmp_path, (75, 101), (64,), "geometric")  # prepares the square dataset
    manifest = read_manifest(tmp_path / "prepared_75x101")
    cfg = PseudoLabelConfig(scales=(64,), flip=True, thresholds=(0.1, 0.3, 0.5, 0.7, 0.9))
    sweep = threshold_sweep(BrightSquareNet(), manifest, cfg, torch.device("cpu"), runtime=BATCHES_OF_TWO)
    per_image = sweep["per_image_best_t"]
    assert per_image["images"] == 3 and sum(row["images"] for row in per_image["histogram"]) == 3
    assert per_image["std"] == pytest.approx(0, abs=1e-12)  # three identical images pick the same t
    # identical images pick the same t, so the per-image oracle is exactly the best single t
    assert per_image["oracle_miou"] == pytest.approx(max(point["miou"] for point in sweep["curve"]), abs=1e-12)
    metrics = comparison_metrics(None, sweep)
    assert metrics["per_image_best_t_mean"] == per_image["mean"] and metrics["per_image_oracle_miou"] == per_image["oracle_miou"]
    assert [row["threshold"] for row in per_image_plot_rows(sweep)] == [0.1, 0.3, 0.5, 0.7, 0.9]
    json.dumps(sweep, allow_nan=False)
