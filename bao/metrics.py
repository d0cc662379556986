"""Segmentation and classification metrics, computed from data every time."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from bao.data.palette import IGNORE_INDEX

if TYPE_CHECKING:  # torch only for annotations: `python -m bao.evaluate` starts without it
    import torch


def pixel_runs(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(gt, pred) at the start of each run of equal pairs in the flattened masks, and run lengths.

    Masks are blobby (a few thousand runs in a VOC image), so counting runs instead of pixels is
    several times faster; noisy masks with short runs fall back to every pixel (lengths None).
    """
    gt, pred = gt.ravel(), pred.ravel()
    changed = gt[1:] != gt[:-1]
    changed |= pred[1:] != pred[:-1]
    starts = np.flatnonzero(changed)
    if starts.size > gt.size // 8:
        return gt, pred, None
    starts = np.concatenate(([0], starts + 1))
    return gt[starts], pred[starts], np.diff(starts, append=gt.size)


def as_mask_bytes(mask: np.ndarray) -> np.ndarray:
    """uint8 view of a class-index mask; values outside 0..255 cannot be class indices here."""
    mask = np.asarray(mask)
    if mask.dtype == np.uint8:
        return mask
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise ValueError(f"class index outside 0..255 (got {mask.min()}..{mask.max()})")
    return mask.astype(np.uint8)


def confusion_counts(gt: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """(K, K) int64 counts over non-ignored pixels, one bincount over ``gt * K + pred`` (by runs).

    A class index >= K in the ground truth (other than ``ignore_index``) or in the prediction of
    a non-ignored pixel is an error naming the values.
    """
    if np.shape(gt) != np.shape(pred):
        raise ValueError(f"ground truth {np.shape(gt)} and prediction {np.shape(pred)} differ in shape")
    k = num_classes
    gt_values, pred_values, lengths = pixel_runs(as_mask_bytes(gt), as_mask_bytes(pred))
    rows = np.minimum(gt_values, k).astype(np.intp)  # row k: invalid ground truth
    rows[gt_values == ignore_index] = k + 1  # row k + 1: ignored pixels, whatever the prediction
    cols = np.minimum(pred_values, k)  # column k: invalid prediction
    counts = np.bincount(rows * (k + 1) + cols, weights=lengths, minlength=(k + 2) * (k + 1)).reshape(k + 2, k + 1)
    if counts[k].any() or counts[:k, k].any():
        valid = gt_values != ignore_index
        bad_gt = sorted({int(v) for v in np.unique(gt_values[valid]) if v >= k})
        bad_pred = sorted({int(v) for v in np.unique(pred_values[valid]) if v >= k})
        raise ValueError(f"class index outside 0..{k - 1} (ignore={ignore_index}): ground truth has {bad_gt}, prediction has {bad_pred}")
    return counts[:k, :k].astype(np.int64)


def stacked_confusion_counts(
    gt: np.ndarray, predictions: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX, *, chunk_pixels: int = 1 << 22
) -> np.ndarray:
    """(S, K, K) int64 counts of each of the S labellings ``predictions`` (S, H, W) against one ``gt``.

    The threshold sweep and the alignment check score 20 to 170 labellings of every image: one
    bincount per chunk of about ``chunk_pixels`` pixels costs a fraction of S calls of
    ``confusion_counts``, with the same counts and the same errors for class indices >= K."""
    predictions = np.asarray(predictions)
    if predictions.ndim != 3 or predictions.shape[1:] != np.shape(gt):
        raise ValueError(f"ground truth {np.shape(gt)} and predictions {predictions.shape} differ in shape")
    k = num_classes
    valid = np.asarray(gt) != ignore_index
    gt_valid = np.asarray(gt)[valid].astype(np.intp)
    if gt_valid.size and gt_valid.max() >= k:
        raise ValueError(f"class index outside 0..{k - 1} (ignore={ignore_index}): ground truth has {sorted({int(v) for v in np.unique(gt_valid) if v >= k})}")
    counts = np.zeros((len(predictions), k, k), dtype=np.int64)
    per_chunk = max(1, chunk_pixels // max(gt_valid.size, 1))
    for start in range(0, len(predictions), per_chunk):
        chunk = predictions[start : start + per_chunk][:, valid].astype(np.intp)
        if chunk.size and chunk.max() >= k:
            raise ValueError(f"class index outside 0..{k - 1} (ignore={ignore_index}): prediction has {sorted({int(v) for v in np.unique(chunk) if v >= k})}")
        index = np.arange(len(chunk))[:, None] * (k * k) + gt_valid * k + chunk
        counts[start : start + len(chunk)] = np.bincount(index.ravel(), minlength=len(chunk) * k * k).reshape(-1, k, k)
    return counts


class ConfusionMatrix:
    """Rows = ground truth, columns = prediction, accumulated from one joint histogram per update."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        if not 1 <= num_classes <= 255:
            raise ValueError(f"num_classes must be in 1..255 (8-bit masks), got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    @property
    def counted(self) -> bool:
        """Whether any pixel was counted: without one (no mask, or every pixel ignored) an mIoU
        would be NaN, so callers report null instead."""
        return bool(self.matrix.any())

    def update(self, gt: np.ndarray, pred: np.ndarray) -> None:
        self.matrix += confusion_counts(gt, pred, self.num_classes, self.ignore_index)

    def add(self, matrix: np.ndarray) -> None:
        """Fold in a (K, K) matrix counted elsewhere (a decoding worker, another process)."""
        self.matrix += matrix

    def all_reduce(self) -> None:
        """Sum the matrices of every process of a ``torchrun`` job (a no-op in a single process)."""
        from bao.distributed import all_reduce_sum

        self.matrix = all_reduce_sum(self.matrix)

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN for a class absent from both ground truth and prediction."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / np.maximum(union, 1), np.nan)

    def compute(self, class_names: list[str] | tuple[str, ...] | None = None) -> dict:
        """mIoU over classes with a non-empty union, pixel accuracy, IoU keyed by class name, and
        the class-agnostic foreground's recall and precision (class 0 is background): how much of
        the objects the labels cover, and how much of what they mark is object (None when empty)."""
        iou = self.iou()
        names = list(class_names) if class_names is not None else [str(i) for i in range(self.num_classes)]
        if len(names) != self.num_classes:
            raise ValueError(f"{len(names)} class names for {self.num_classes} classes")
        total = self.matrix.sum()
        return {
            "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
            "pixel_accuracy": float(np.trace(self.matrix) / total) if total else float("nan"),
            "per_class_iou": {name: (None if np.isnan(value) else float(value)) for name, value in zip(names, iou)},
            **self.foreground_cover(),
        }

    def foreground_cover(self) -> dict:
        both = int(self.matrix[1:, 1:].sum())  # object pixels labelled as some object
        truth, marked = int(self.matrix[1:, :].sum()), int(self.matrix[:, 1:].sum())
        return {
            "foreground_recall": both / truth if truth else None,
            "foreground_precision": both / marked if marked else None,
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


def headline_first(metrics: dict, headline: tuple[str, ...]) -> dict:
    """``metrics`` reordered for ``dvc exp show``, whose columns follow the file's key order: the
    ``headline`` keys, then the other single numbers, then nested tables (per-class IoUs)."""
    first = [key for key in headline if key in metrics]
    scalars = [key for key, value in metrics.items() if key not in first and not isinstance(value, dict)]
    tables = [key for key, value in metrics.items() if isinstance(value, dict)]
    return {key: metrics[key] for key in [*first, *scalars, *tables]}
