"""Losses of the three training stages, and BAO's threshold-free teacher targets."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from bao.data.palette import IGNORE_INDEX
from bao.infer.pseudo import max_normalized_cams


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.multilabel_soft_margin_loss(logits.float(), labels.float())


def background_activated_cams(cams: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, K+1, h, w): the max-normalised CAMs (as the baseline's), background = 1 - their max."""
    cams = max_normalized_cams(cams, labels)
    background = 1.0 - cams.amax(dim=1, keepdim=True)
    return torch.cat([background, cams], dim=1)


def teacher_targets(cams: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-pixel label in 0..K (0 = background) from the teacher's CAMs, with no threshold."""
    return background_activated_cams(cams, labels).max(dim=1).indices  # argmax, faster over channels on CPU


def smooth_targets(targets: torch.Tensor, num_channels: int, eps: float) -> torch.Tensor:
    """(B, C, h, w): 1 - eps on the target channel, eps / (C - 1) on each other channel."""
    one_hot = F.one_hot(targets, num_channels).permute(0, 3, 1, 2).float()
    return one_hot * (1.0 - eps) + (1.0 - one_hot) * (eps / (num_channels - 1))


def balanced_soft_ce(
    logits: torch.Tensor, soft_targets: torch.Tensor, hard_targets: torch.Tensor, fg_weight: float = 1.0
) -> torch.Tensor:
    """Mean of the background-pixel and foreground-pixel soft CE averages; an empty half counts 0."""
    pixel_ce = -(soft_targets * F.log_softmax(logits.float(), dim=1)).sum(dim=1)
    is_background = hard_targets == 0
    zero = pixel_ce.new_zeros(())
    background = pixel_ce[is_background].mean() if is_background.any() else zero
    foreground = (fg_weight * pixel_ce[~is_background]).mean() if (~is_background).any() else zero
    return 0.5 * (background + foreground)


def soft_ce(logits: torch.Tensor, soft_targets: torch.Tensor) -> torch.Tensor:
    """Plain (unbalanced) soft cross-entropy over all pixels: the ablation of the balanced loss."""
    return -(soft_targets * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


def segmentation_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), masks, ignore_index=IGNORE_INDEX)
