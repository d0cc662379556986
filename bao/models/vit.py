"""A timm Vision Transformer as a CAM backbone: patch tokens as a feature map, attention on demand."""

from __future__ import annotations

import timm
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from bao.models.attention import AttentionRecorder, check_attention_modules
from bao.models.pretrained import create_timm_model, timm_normalization
from bao.models.geometry import FeatureGeometry

# timm modules whose models are VisionTransformer (or a subclass such as DeiT's distilled one).
VIT_MODULES = ("timm.models.vision_transformer", "timm.models.deit")


def is_timm_vit(name: str) -> bool:
    return timm.is_model(name) and timm.models.model_entrypoint(name).__module__ in VIT_MODULES


class TimmViT(nn.Module):
    """Any timm ViT at any input size: timm resamples the position embedding to the patch grid
    (``dynamic_img_size``) and pads images whose side is not a multiple of the patch size."""

    has_attention = True

    def __init__(self, name: str, pretrained: bool):
        super().__init__()
        self.body = create_timm_model(name, pretrained, num_classes=0, dynamic_img_size=True, dynamic_img_pad=True)
        self.normalization = timm_normalization(name)
        if not isinstance(self.body, VisionTransformer):
            raise ValueError(f"model.backbone: {name} is not a timm VisionTransformer")
        self.out_channels = self.body.embed_dim
        self.head_prefixes = tuple(f"{key}." for key in _as_tuple(self.body.pretrained_cfg.get("classifier", "head")))
        modules = [block.attn for block in self.body.blocks]
        check_attention_modules(modules, name)
        self.recorder = AttentionRecorder(modules, self.body.num_prefix_tokens)

    def checkpoint_module(self) -> nn.Module:
        return self.body

    def feature_geometry(self, input_size: tuple[int, int]) -> FeatureGeometry:
        """Token o is the patch [p*o, p*o + p): centred on p*o + (p - 1)/2 (padding only ever
        extends the bottom and right edges)."""
        patch = tuple(float(p) for p in self.body.patch_embed.patch_size)
        return FeatureGeometry(patch, tuple((p - 1) / 2 for p in patch))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.body.forward_features(images)[:, self.body.num_prefix_tokens:]
        height, width = self.body.patch_embed.dynamic_feat_size(tuple(images.shape[-2:]))
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, height, width)

    def extract(self, images: torch.Tensor, with_attention: bool = False) -> dict[str, torch.Tensor]:
        if not with_attention:
            return {"features": self(images)}
        with self.recorder.record() as recorded:
            features = self(images)
        return {"features": features, "attention": recorded["attention"]}


def _as_tuple(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)
