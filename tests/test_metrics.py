import math

import numpy as np
import pytest
import torch

from bao.metrics import ConfusionMatrix, average_precision, confusion_counts, mean_average_precision, stacked_confusion_counts


def test_confusion_miou_hand_computed_with_ignore():
    gt = np.array([[0, 0, 1], [1, 2, 255]], dtype=np.uint8)
    pred = np.array([[0, 1, 1], [1, 0, 2]], dtype=np.uint8)
    matrix = ConfusionMatrix(3)
    matrix.update(gt, pred)
    # ignore pixel dropped; rows gt, cols pred
    assert matrix.matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    result = matrix.compute(["bg", "a", "b"])
    # IoU bg = 1 / (2 + 2 - 1) = 1/3; a = 2 / (2 + 3 - 2) = 2/3; b = 0 / (1 + 0) = 0
    assert result["per_class_iou"] == pytest.approx({"bg": 1 / 3, "a": 2 / 3, "b": 0.0})
    assert result["miou"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert result["pixel_accuracy"] == pytest.approx(3 / 5)


def test_foreground_cover_is_class_agnostic_and_none_when_empty():
    gt = np.array([0, 0, 0, 1, 1, 2, 2, 255], dtype=np.uint8)
    pred = np.array([0, 1, 2, 1, 0, 1, 0, 1], dtype=np.uint8)  # the gt-2 pixel labelled 1 still covers an object
    matrix = ConfusionMatrix(3)
    matrix.update(gt, pred)
    result = matrix.compute()
    assert result["foreground_recall"] == pytest.approx(2 / 4)  # 4 object pixels, 2 labelled as objects
    assert result["foreground_precision"] == pytest.approx(2 / 4)  # 4 marked, 2 of them objects
    matrix.update(np.array([1, 1]), np.array([1, 1]))
    assert matrix.compute()["foreground_recall"] == pytest.approx(4 / 6)
    assert matrix.compute()["foreground_precision"] == pytest.approx(4 / 6)
    background_only = ConfusionMatrix(3)
    background_only.update(np.zeros(4, np.uint8), np.zeros(4, np.uint8))
    assert background_only.compute()["foreground_recall"] is None
    assert background_only.compute()["foreground_precision"] is None


def test_class_absent_everywhere_is_excluded_from_mean():
    matrix = ConfusionMatrix(3)
    matrix.update(np.array([0, 1]), np.array([0, 1]))
    result = matrix.compute()
    assert result["per_class_iou"]["2"] is None
    assert result["miou"] == 1.0


def test_confusion_rejects_bad_input():
    matrix = ConfusionMatrix(2)
    with pytest.raises(ValueError, match="shape"):
        matrix.update(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="outside"):
        matrix.update(np.array([0, 5]), np.array([0, 1]))


@pytest.mark.parametrize("chunk_pixels", [1, 7, 1 << 22])
def test_stacked_counts_are_each_labellings_counts(chunk_pixels):
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 4, (9, 11)).astype(np.uint8)
    gt[0, :5] = 255
    predictions = rng.integers(0, 4, (6, 9, 11)).astype(np.uint8)
    predictions[:, 0, 0] = 200  # under an ignored pixel: not counted, not an error
    stacked = stacked_confusion_counts(gt, predictions, 4, chunk_pixels=chunk_pixels)
    assert stacked.shape == (6, 4, 4) and stacked.dtype == np.int64
    for counts, prediction in zip(stacked, predictions):
        assert np.array_equal(counts, confusion_counts(gt, prediction, 4))
    assert stacked.sum() == 6 * (gt != 255).sum()


def test_stacked_counts_reject_bad_input():
    gt = np.zeros((2, 2), np.uint8)
    with pytest.raises(ValueError, match="shape"):
        stacked_confusion_counts(gt, np.zeros((3, 2, 3), np.uint8), 2)
    with pytest.raises(ValueError, match=r"prediction has \[5\]"):
        stacked_confusion_counts(gt, np.array([[[0, 1], [1, 0]], [[0, 5], [1, 1]]], np.uint8), 2)
    with pytest.raises(ValueError, match=r"ground truth has \[3\]"):
        stacked_confusion_counts(np.array([[0, 3], [1, 1]], np.uint8), np.zeros((1, 2, 2), np.uint8), 2)


def test_average_precision_hand_computed():
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    targets = np.array([1, 0, 1, 0])
    assert average_precision(scores, targets) == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert math.isnan(average_precision(scores, np.zeros(4)))
    logits = torch.tensor([[2.0, 0.0], [1.0, 3.0]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert mean_average_precision(logits, labels) == 1.0
