"""Segmentation and classification metrics, computed from data every time."""

from __future__ import annotations

import numpy as np
import torch

from bao.data.palette import IGNORE_INDEX


class ConfusionMatrix:
    """Rows = ground truth, columns = prediction, accumulated with one bincount per update."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, gt: np.ndarray, pred: np.ndarray) -> None:
        if gt.shape != pred.shape:
            raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} differ in shape")
        gt = np.asarray(gt).ravel().astype(np.int64)
        pred = np.asarray(pred).ravel().astype(np.int64)
        keep = gt != self.ignore_index
        gt, pred = gt[keep], pred[keep]
        if gt.size and (gt.max() >= self.num_classes or pred.max() >= self.num_classes or pred.min() < 0):
            raise ValueError(f"class index outside 0..{self.num_classes - 1} (ignore={self.ignore_index})")
        k = self.num_classes
        self.matrix += np.bincount(gt * k + pred, minlength=k * k).reshape(k, k)

    def merge(self, other: "ConfusionMatrix") -> None:
        self.matrix += other.matrix

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN for a class absent from both ground truth and prediction."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / np.maximum(union, 1), np.nan)

    def compute(self, class_names: list[str] | tuple[str, ...] | None = None) -> dict:
        """mIoU over classes with a non-empty union, pixel accuracy, and IoU keyed by class name."""
        iou = self.iou()
        names = list(class_names) if class_names is not None else [str(i) for i in range(self.num_classes)]
        if len(names) != self.num_classes:
            raise ValueError(f"{len(names)} class names for {self.num_classes} classes")
        total = self.matrix.sum()
        return {
            "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
            "pixel_accuracy": float(np.trace(self.matrix) / total) if total else float("nan"),
            "per_class_iou": {name: (None if np.isnan(value) else float(value)) for name, value in zip(names, iou)},
        }


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Area under the precision-recall curve as the mean precision at each positive (VOC style, no interpolation)."""
    order = np.argsort(-scores, kind="stable")
    hits = targets[order] > 0
    if not hits.any():
        return float("nan")
    precision_at_hit = np.cumsum(hits)[hits] / (np.flatnonzero(hits) + 1)
    return float(precision_at_hit.mean())


def mean_average_precision(logits: torch.Tensor, labels: torch.Tensor) -> float:
    scores, targets = logits.float().cpu().numpy(), labels.cpu().numpy()
    values = [average_precision(scores[:, k], targets[:, k]) for k in range(scores.shape[1])]
    return float(np.nanmean(values))
