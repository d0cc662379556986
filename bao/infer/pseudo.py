"""Per-pixel labels from merged maps: BAO's argmax with no threshold, and the CAM threshold baseline."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F

NORM_EPS = 1e-5


def floor_minmax_normalize(maps: torch.Tensor) -> torch.Tensor:
    """The official BAO normalisation of (C, H, W) maps: (x - min - eps) / (max - min + eps), with
    pixels within eps of the channel's minimum first set to 0.

    Almost everywhere this is ``minmax_normalize``; the eps shift decides the pixels where every
    channel sits at its minimum (0 after ReLU). There a channel scores -eps / (range + eps), so the
    channel with the largest range (max - min) wins: the present class with the largest maximum
    unless the background's is larger still."""
    flat = maps.flatten(1)
    low, high = flat.amin(dim=1)[:, None, None], flat.amax(dim=1)[:, None, None]
    floored = torch.where(maps < low + NORM_EPS, torch.zeros_like(maps), maps)
    return (floored - low - NORM_EPS) / (high - low + NORM_EPS)


def bao_scores(background: torch.Tensor, cams: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(K+1, H, W): [background, present classes], each ReLU + min-max normalized as the official
    code does (``floor_minmax_normalize``, which also settles tie pixels); absent classes -1."""
    present = labels.bool().to(cams.device)
    channels = torch.cat([background[None], cams * present[:, None, None]]).float()
    scores = floor_minmax_normalize(F.relu(channels))
    scores[1:][~present] = -1.0  # an absent class never wins, even on an all-zero pixel
    return scores


def scores_to_labels(scores: torch.Tensor) -> np.ndarray:
    """(H, W) uint8: the argmax channel of (C, H, W) scores."""
    return scores.argmax(dim=0).to(torch.uint8).cpu().numpy()


def bao_pseudo_label(background: torch.Tensor, cams: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """(H, W) uint8 in 0..K: argmax of ``bao_scores``, no threshold."""
    return scores_to_labels(bao_scores(background, cams, labels))


def max_normalized_cams(cams: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The baseline's CAM normalization: ReLU, absent classes zeroed, each class / its max."""
    cams = F.relu(cams.float()) * labels.bool().to(cams.device)[:, None, None]
    return cams / (cams.flatten(1).amax(dim=1)[:, None, None] + NORM_EPS)


def threshold_pseudo_labels(normalized_cams: torch.Tensor, thresholds: Sequence[float]) -> list[np.ndarray]:
    """One (H, W) label map per t: background where every class score is <= t, else the best class."""
    best, index = normalized_cams.max(dim=0)
    best, label = best.cpu().numpy(), (index + 1).to(torch.uint8).cpu().numpy()
    return [np.where(best > t, label, 0).astype(np.uint8) for t in thresholds]
