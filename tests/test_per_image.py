"""The per-image best background threshold and the per-image oracle, hand-computed on tiny images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bao.config import PseudoLabelConfig
from bao.data.manifest import read_manifest
from bao.infer.per_image import PerImageBestT, best_threshold_index, farthest_from, image_miou
from bao.infer.pipeline import gallery_indices, threshold_sweep
from bao.infer.pseudo import threshold_pseudo_labels
from bao.infer.report import comparison_metrics, per_image_plot_rows
from bao.data.palette import read_mask
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
    # each image's own best t, by image id
    ids = list(manifest.split("train")["image_id"])
    assert sorted(per_image["by_image"]) == sorted(ids)
    assert list(per_image["by_image"].values()) == pytest.approx([per_image["mean"]] * 3)


def test_the_sweep_saves_the_labels_at_one_t_for_every_training_image(tmp_path):
    label_offsets(tmp_path, (75, 101), (64,), "geometric")
    manifest = read_manifest(tmp_path / "prepared_75x101")
    cfg = PseudoLabelConfig(scales=(64,), flip=True, thresholds=(0.1, 0.5, 0.9))
    net = BrightSquareNet()
    (tmp_path / "low").mkdir()
    (tmp_path / "high").mkdir()
    sweep = threshold_sweep(net, manifest, cfg, torch.device("cpu"), runtime=BATCHES_OF_TWO, labels_out=tmp_path / "low", label_threshold=0.1)
    threshold_sweep(net, manifest, cfg, torch.device("cpu"), runtime=BATCHES_OF_TWO, labels_out=tmp_path / "high", label_threshold=0.9)
    ids = list(manifest.split("train")["image_id"])
    assert sorted(path.stem for path in (tmp_path / "low").glob("*.png")) == sorted(ids)
    for image_id in ids:
        low, high = read_mask(tmp_path / "low" / f"{image_id}.png"), read_mask(tmp_path / "high" / f"{image_id}.png")
        assert (low > 0).sum() > (high > 0).sum() > 0  # a higher t keeps fewer foreground pixels
        assert set(np.unique(low)) <= {0, 1}
    assert sweep["per_image_best_t"]["images"] == len(ids)


def test_the_gallery_rule_takes_the_images_farthest_from_the_global_t_on_both_sides():
    best_t = {0: 0.5, 1: 0.1, 2: 0.95, 3: 0.3, 4: 0.9, 5: 0.45, 6: 0.0, 7: 0.55}
    # below 0.5: 6 (0.5 away), 1 (0.4), 3, 5; above: 2 (0.45), 4 (0.4), 7
    assert farthest_from(best_t, 0.5, 2) == [6, 2]
    assert farthest_from(best_t, 0.5, 4) == [6, 1, 4, 2]  # shown lowest best t first
    assert farthest_from(best_t, 0.5, 7) == [6, 1, 3, 5, 7, 4, 2]
    assert farthest_from(best_t, 0.5, 8)[-1] == 2 and 0 in farthest_from(best_t, 0.5, 8)  # the image at t comes last
    # one side empty: the other fills the gallery; ties go to the smaller key
    assert farthest_from({0: 0.9, 1: 0.9, 2: 0.7, 3: 0.5}, 0.5, 2) == [0, 1]
    assert farthest_from({}, 0.5, 3) == []
    # the rule is the farthest: no unpicked image is farther from t than a picked one on its side
    picked = farthest_from(best_t, 0.5, 3)
    for side in (lambda t: t < 0.5, lambda t: t > 0.5):
        chosen = [abs(best_t[k] - 0.5) for k in picked if side(best_t[k])]
        others = [abs(t - 0.5) for k, t in best_t.items() if side(t) and k not in picked]
        assert not chosen or not others or min(chosen) >= max(others)


def test_gallery_indices_read_the_sweeps_per_image_best_t(tmp_path):
    label_offsets(tmp_path, (75, 101), (64,), "geometric")
    manifest = read_manifest(tmp_path / "prepared_75x101")
    ids = list(manifest.split("train")["image_id"])
    sweep = {"best_threshold": 0.5, "per_image_best_t": {"by_image": {ids[0]: 0.5, ids[1]: 0.9, ids[2]: 0.1}}}
    assert gallery_indices(manifest, sweep, 2) == [2, 1]
    assert gallery_indices(manifest, {"best_threshold": None, "per_image_best_t": None}, 2) is None
