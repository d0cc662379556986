"""Why one background threshold fails: the t each training image would pick for itself.

An image's own mIoU at a t is the mean IoU over the classes (background included) present in its
ground truth or in its prediction at that t; ignored pixels do not count. Its best t is the swept
t with the highest such mIoU (the smallest t on a tie). The per-image oracle sums every image's
confusion counts at its own best t: an upper bound no single t, and no method without masks,
can reach. Everything here reuses the per-image counts the sweep computes anyway.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from bao.distributed import gather_tensors
from bao.metrics import ConfusionMatrix


def image_miou(counts: np.ndarray) -> float:
    """Mean IoU of one image's (K, K) counts over the classes in its ground truth or prediction;
    NaN when it has no scored pixel."""
    tp = np.diag(counts).astype(np.float64)
    union = counts.sum(0) + counts.sum(1) - tp
    seen = union > 0
    return float((tp[seen] / union[seen]).mean()) if seen.any() else float("nan")


def best_threshold_index(counts_per_t: np.ndarray) -> int | None:
    """Index of the t (axis 0 of (T, K, K)) with the image's highest mIoU; None if none is scored."""
    mious = np.array([image_miou(counts) for counts in counts_per_t])
    if np.isnan(mious).all():
        return None
    return int(np.nanargmax(mious))


class PerImageBestT:
    """Accumulates each scored image's best t and the per-image oracle's confusion matrix."""

    def __init__(self, thresholds: Sequence[float], num_classes: int):
        self.thresholds = list(thresholds)
        self.best_t: list[float] = []
        self.oracle = ConfusionMatrix(num_classes)

    def add(self, counts_per_t: np.ndarray) -> None:
        best = best_threshold_index(counts_per_t)
        if best is not None:
            self.best_t.append(self.thresholds[best])
            self.oracle.add(counts_per_t[best])

    def all_reduce(self) -> None:
        """Every process's images, under ``torchrun``."""
        gathered = gather_tensors(torch.tensor(self.best_t, dtype=torch.float64))
        self.best_t = [float(t) for part in gathered for t in part.tolist()]
        self.oracle.all_reduce()

    def summary(self, class_names: Sequence[str]) -> dict | None:
        """Mean, population std, 10th/90th percentiles (linear interpolation) of the best t, how many
        images pick each t, and the per-image oracle's mIoU; None without a scored image."""
        if not self.best_t:
            return None
        values = np.array(self.best_t)
        counts = {t: int(np.isclose(values, t).sum()) for t in self.thresholds}
        return {
            "images": len(values),
            "mean": float(values.mean()),
            "std": float(values.std()),
            "p10": float(np.percentile(values, 10)),
            "p90": float(np.percentile(values, 90)),
            "oracle_miou": self.oracle.compute(list(class_names))["miou"],
            "histogram": [{"threshold": round(t, 6), "images": n} for t, n in counts.items()],
        }
