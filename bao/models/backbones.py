"""Backbones return one feature map (B, D, h, w); built from a timm name, optionally pretrained."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn


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
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: backbone checkpoint not found")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    if missing:
        raise ValueError(f"{path}: checkpoint does not fit backbone; missing keys: {missing[:10]} (of {len(missing)})")
    if unexpected:
        raise ValueError(f"{path}: checkpoint has unexpected keys: {unexpected[:10]} (of {len(unexpected)})")


def create_backbone(name: str, pretrained: bool, output_stride: int, checkpoint: str | None = None) -> TimmFeatures:
    backbone = TimmFeatures(name, pretrained=pretrained, output_stride=output_stride)
    if checkpoint:
        load_backbone_checkpoint(backbone.body, checkpoint)
    return backbone
