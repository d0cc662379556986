"""Backbones return one feature map (B, D, h, w); built from a timm name, optionally pretrained.

Local weights (``model.checkpoint``) load strictly: every backbone key must be in the file with
the right shape and the file may hold nothing else, except the classification head of the model
the weights came from (ImageNet's 1000 classes, TransCAM's 21), which is taken only where its
shape fits and skipped otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import timm
import torch
from torch import nn

from bao.io import CheckpointError, load_torch
from bao.models.pretrained import create_timm_model, timm_normalization

log = logging.getLogger("bao")
from bao.models.geometry import FeatureGeometry, trace_geometry


class TimmFeatures(nn.Module):
    """The last stage of a timm model created with ``features_only``, at the requested stride."""

    has_attention = False

    def __init__(self, name: str, pretrained: bool, output_stride: int):
        super().__init__()
        kwargs = {"output_stride": output_stride} if output_stride != 32 else {}
        self.body = create_timm_model(name, pretrained, features_only=True, out_indices=(-1,), **kwargs)
        self.normalization = timm_normalization(name)  # what its pretrained weights expect
        self.out_channels = self.body.feature_info.channels()[-1]
        classifier = timm.models.get_pretrained_cfg_value(name, "classifier") or ()
        self.head_prefixes = tuple(f"{key}." for key in ((classifier,) if isinstance(classifier, str) else classifier))

    def checkpoint_module(self) -> nn.Module:
        return self.body

    def feature_geometry(self, input_size: tuple[int, int]) -> FeatureGeometry:
        """Traced from the layers (padding differs between timm families and, for TF-style SAME
        padding, with the input size), once per input size."""
        cache = self.__dict__.setdefault("_geometry_cache", {})
        key = tuple(int(n) for n in input_size)
        if key not in cache:
            cache[key] = trace_geometry(self.body, key)
        return cache[key]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)[-1]


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict, or one under ``model`` / ``state_dict`` (training checkpoints)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: backbone checkpoint (model.checkpoint) not found")
    state = load_torch(path)
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict, got {type(state).__name__}")
    return {key.removeprefix("module."): value for key, value in state.items()}


def fit_state_dict(
    own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], head_prefixes: Sequence[str], source: str
) -> dict[str, torch.Tensor]:
    """The entries of ``state`` to load; raises naming every missing, unexpected or misshapen key."""
    is_head = lambda key: key.startswith(tuple(head_prefixes))  # noqa: E731
    # a BatchNorm step counter is not a weight; older checkpoints do not have it
    missing = [key for key in own if key not in state and not is_head(key) and not key.endswith("num_batches_tracked")]
    unexpected = [key for key in state if key not in own and not is_head(key)]
    misshapen = [
        f"{key} {tuple(state[key].shape)} != {tuple(own[key].shape)}"
        for key in own
        if key in state and not is_head(key) and state[key].shape != own[key].shape
    ]
    problems = [f"{name} ({len(keys)}): {keys[:20]}" for name, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", misshapen)) if keys]
    if problems:
        raise ValueError(f"{source}: checkpoint does not fit the backbone; " + "; ".join(problems))
    skipped = [key for key in state if is_head(key) and (key not in own or state[key].shape != own[key].shape)]
    if skipped:
        log.warning("%s: classification head NOT loaded (other classes or shapes): %s", source, skipped)
    absent = [key for key in own if is_head(key) and key not in state]
    if absent:
        log.warning("%s: has no %s; kept at their fresh initialisation", source, absent)
    return {key: value for key, value in state.items() if key in own and key not in skipped}


def load_backbone_checkpoint(backbone: nn.Module, path: str | Path) -> None:
    """Strict load into the backbone's weight-holding module (see module docstring)."""
    module = backbone.checkpoint_module()
    loadable = fit_state_dict(module.state_dict(), read_state_dict(path), getattr(backbone, "head_prefixes", ()), str(path))
    module.load_state_dict(loadable, strict=False)


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
        load_backbone_checkpoint(backbone, checkpoint)
    return backbone
