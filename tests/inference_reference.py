"""Per-image forms of the library's batched inference, for tests: one image at a time."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from bao.infer.multiscale import batched_multiscale_maps
from bao.infer.pseudo import bao_scores, scores_to_labels


def one_image_maps(
    forward: Callable[[torch.Tensor], dict[str, torch.Tensor]], image: torch.Tensor, scales: Sequence[int], flip: bool, *, geometry=None
) -> dict[str, torch.Tensor]:
    """Multi-scale (+ flip) maps of one (3, H, W) image summed at (H, W): the batched path with a
    batch of one, for a ``forward`` that needs no labels."""
    return batched_multiscale_maps(lambda batch, _labels: forward(batch), [image], torch.zeros(1, 1), scales, flip=flip, geometry=geometry)[0]


def bao_pseudo_label(background: torch.Tensor, cams: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """(H, W) uint8 in 0..K for one image: the argmax of ``bao_scores``, no threshold."""
    return scores_to_labels(bao_scores(background, cams, labels))
