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
        self.indices: list[int] = []  # the image (dataset index; -1: not given) of each best t
        self.oracle = ConfusionMatrix(num_classes)

    def add(self, counts_per_t: np.ndarray, index: int = -1) -> None:
        best = best_threshold_index(counts_per_t)
        if best is not None:
            self.best_t.append(self.thresholds[best])
            self.indices.append(int(index))
            self.oracle.add(counts_per_t[best])

    def all_reduce(self) -> None:
        """Every process's images, under ``torchrun``."""
        gathered = gather_tensors(torch.tensor(self.best_t, dtype=torch.float64))
        self.best_t = [float(t) for part in gathered for t in part.tolist()]
        gathered = gather_tensors(torch.tensor(self.indices, dtype=torch.int64))
        self.indices = [int(i) for part in gathered for i in part.tolist()]
        self.oracle.all_reduce()

    def by_index(self) -> dict[int, float]:
        """Each image's own best t, keyed by the index given to ``add``, in index order."""
        return dict(sorted((i, t) for i, t in zip(self.indices, self.best_t) if i >= 0))

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


def farthest_from(best_t: dict, threshold: float, count: int) -> list:
    """The ``count`` images (keys of ``best_t``, image -> its own best t) whose best t lies farthest
    from ``threshold``, taken alternately from below and above it (the farthest first on each side,
    ties to the smaller key), so a gallery shows both ways one t fails: images that need a lower
    t (objects larger than their CAMs) and images that need a higher one (CAMs spilling over the
    background). A side with too few images is filled from the other; images at ``threshold``
    itself come last. Returned in order of best t, lowest first."""
    def order(side: list) -> list:
        return sorted(side, key=lambda key: (-abs(best_t[key] - threshold), key))

    below = order([key for key, t in best_t.items() if t < threshold - 1e-9])
    above = order([key for key, t in best_t.items() if t > threshold + 1e-9])
    level = order([key for key, t in best_t.items() if abs(t - threshold) <= 1e-9])
    picked: list = []
    while len(picked) < count and (below or above):
        for side in (below, above):
            if side and len(picked) < count:
                picked.append(side.pop(0))
    picked += level[: count - len(picked)]
    return sorted(picked, key=lambda key: (best_t[key], key))
