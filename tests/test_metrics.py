import math

import numpy as np
import pytest
import torch

from bao.metrics import ConfusionMatrix, average_precision, mean_average_precision


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


def test_average_precision_hand_computed():
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    targets = np.array([1, 0, 1, 0])
    assert average_precision(scores, targets) == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert math.isnan(average_precision(scores, np.zeros(4)))
    logits = torch.tensor([[2.0, 0.0], [1.0, 3.0]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert mean_average_precision(logits, labels) == 1.0
