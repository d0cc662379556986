"""Per-pixel labels from merged maps: BAO's argmax with no threshold, and the CAM threshold baseline."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F

NORM_EPS = 1e-5  # min-max normalisation of BAO's scores
CAM_NORM_EPS = 1e-5  # bao-method.md: ReLU, then divide each class map by its spatial max (+1e-5)


def floor_minmax_normalize(maps: torch.Tensor) -> torch.Tensor:
    """The official BAO normalisation of (C, H, W) maps: (x - min - eps) / (max - min + eps), with
    pixels within eps of the channel's minimum first set to 0.

    Used after ReLU, where a channel's minimum is almost always 0: then this is the min-max
    normalisation except at the minimum's pixels, which score -eps / (range + eps). That settles
    the pixels where every channel sits at its minimum: the channel with the largest range
    (max - min) wins, the present class with the largest maximum unless the background's is larger
    still. A channel positive everywhere (minimum m > eps) gives its minimum's pixels
    -(m + eps) / (range + eps) instead, as the official code does."""
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


def softmax_background_scores(background: torch.Tensor, am_classes: torch.Tensor, cams: torch.Tensor, labels: torch.Tensor, *, views: int) -> torch.Tensor:
    """(K+1, H, W): [the student's background probability, present classes' max-normalised CAMs];
    absent classes -1.

    The probability is the softmax over the background and the present classes of the activation
    map's logits averaged over the ``views`` (scales x flips) that were summed: the scale its
    loss trained against the teacher's targets, which put background where 1 - max CAM beats
    the max-normalised CAMs. Unlike the min-max normalisation it is not stretched to [0, 1] in
    every image, so an image can be mostly background or mostly object."""
    present = labels.bool().to(cams.device)
    logits = torch.cat([background[None], am_classes]).float() / views
    logits[1:][~present] = float("-inf")
    probability = torch.softmax(logits, dim=0)[0]
    normalized = max_normalized_cams(cams, labels).masked_fill(~present[:, None, None], -1.0)
    return torch.cat([probability[None], normalized])


def rule_scores(rule: str, maps: dict[str, torch.Tensor], cams: torch.Tensor, labels: torch.Tensor, *, views: int) -> torch.Tensor:
    """BAO's (K+1, H, W) scores under ``pseudo_label.background`` (``softmax`` or ``minmax``), with the
    classes from ``cams``; ``maps`` holds the merged ``background`` and ``am_classes``."""
    if rule == "softmax":
        return softmax_background_scores(maps["background"][0], maps["am_classes"], cams, labels, views=views)
    return bao_scores(maps["background"][0], cams, labels)


def scores_to_labels(scores: torch.Tensor) -> np.ndarray:
    """(H, W) uint8: the argmax channel of (C, H, W) scores (the first on ties). ``max().indices``
    gives argmax's answer; torch's argmax over a leading dim is 10x slower on CPU."""
    return scores.max(dim=0).indices.to(torch.uint8).cpu().numpy()


def max_normalized_cams(cams: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The one CAM max-normalisation, shared by BAO's teacher targets and the threshold baseline:
    ReLU, absent classes zeroed, each class map / (its spatial max + 1e-5).

    ``cams`` (..., K, H, W) with ``labels`` (..., K): one image (K, H, W) or a batch (B, K, H, W)."""
    present = labels.to(device=cams.device).bool()
    cams = F.relu(cams.float()) * present[..., None, None]
    return cams / (cams.flatten(-2).amax(dim=-1)[..., None, None] + CAM_NORM_EPS)


def threshold_pseudo_labels(normalized_cams: torch.Tensor, thresholds: Sequence[float]) -> list[np.ndarray]:
    """One (H, W) label map per t: background where every class score is <= t, else the best class."""
    best, index = normalized_cams.max(dim=0)
    best, label = best.cpu().numpy(), (index + 1).to(torch.uint8).cpu().numpy()
    return [np.where(best > t, label, 0).astype(np.uint8) for t in thresholds]
