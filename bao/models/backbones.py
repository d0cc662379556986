"""Backbones return one feature map (B, D, h, w); built from a timm name, optionally pretrained."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

from bao.io import CheckpointError, load_torch


class TimmFeatures(nn.Module):
    """The last stage of a timm model created with ``features_only``, at the requested stride."""

    def __init__(self, name: str, pretrained: bool, output_stride: int):
        super().__init__()
        kwargs = {"output_stride": output_stride} if output_stride != 32 else {}
        self.body = timm.create_model(name, pretrained=pretrained, features_only=True, out_indices=(-1,), **kwargs)
        self.out_channels = self.body.feature_info.channels()[-1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)[-1]


def load_backbone_checkpoint(backbone: nn.Module, path: str | Path) -> None:
    """Load local weights (state dict or {'model': state dict}); a mismatch names the keys."""
    state = load_torch(path)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict, got {type(state).__name__}")
    load_state_strict(backbone, state, path)


def load_state_strict(module: nn.Module, state: dict, path: str | Path) -> None:
    """``load_state_dict`` that first lists what differs (keys, shapes), naming the file."""
    own = module.state_dict()
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    shapes = [
        f"{key}: file {tuple(state[key].shape)} vs model {tuple(own[key].shape)}"
        for key in own if key in state and hasattr(state[key], "shape") and state[key].shape != own[key].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {missing[:5]} ({len(missing)} in all)")
    if unexpected:
        problems.append(f"unexpected keys {unexpected[:5]} ({len(unexpected)} in all)")
    if shapes:
        problems.append(f"shape mismatch {shapes[:3]} ({len(shapes)} in all; another class count or backbone?)")
    if problems:
        raise CheckpointError(f"{path}: checkpoint does not fit this {type(module).__name__}: " + "; ".join(problems))
    module.load_state_dict(state)


def create_backbone(name: str, pretrained: bool, output_stride: int, checkpoint: str | None = None) -> TimmFeatures:
    backbone = TimmFeatures(name, pretrained=pretrained, output_stride=output_stride)
    if checkpoint:
        load_backbone_checkpoint(backbone.body, checkpoint)
    return backbone
