"""CAM classifiers and the BAO head that adds a label-conditioned background-aware activation map.

Every CAM network returns a dict with ``features`` (B, D, h, w), ``cams`` (B, K, h, w) and image
``logits`` (B, K). Called with ``refine=True`` and built with ``refine="attention"``, it also
returns the backbone's patch-to-patch ``attention`` (B, hw, hw) and its CAMs are refined by it
(TransCAM); the logits always come from the unrefined CAMs.
"""

from __future__ import annotations

import torch
from timm.layers import trunc_normal_
from torch import nn

from bao.data.transforms import Normalization
from bao.models.attention import attention_refine
from bao.models.geometry import FeatureGeometry

REFINE_MODES = ("none", "attention")


class CamModel(nn.Module):
    """What CAM networks share: the refinement switch and its checks."""

    def __init__(self, backbone: nn.Module, num_classes: int, refine: str):
        super().__init__()
        if refine not in REFINE_MODES:
            raise ValueError(f"model.refine must be one of {REFINE_MODES}, got {refine!r}")
        if refine == "attention" and not getattr(backbone, "has_attention", False):
            raise ValueError(
                f"model.refine: attention needs a backbone with attention (a timm ViT or conformer_*); "
                f"{type(backbone).__name__} has none"
            )
        self.backbone = backbone
        self.num_classes = num_classes
        self.refine = refine

    @property
    def out_channels(self) -> int:
        return self.backbone.out_channels

    @property
    def normalization(self) -> Normalization:
        """The input mean/std the backbone's weights expect (training and inference use it)."""
        return self.backbone.normalization
    def feature_geometry(self, input_size: tuple[int, int]) -> FeatureGeometry:
        """Where the cells of ``cams`` (and BAO's ``am``) sit on an input of ``input_size``."""
        return self.backbone.feature_geometry(input_size)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None, refine: bool = False) -> dict[str, torch.Tensor]:
        outputs = self.compute(images, with_attention=refine and self.refine == "attention")
        if "attention" in outputs:
            outputs["cams"] = attention_refine(outputs["attention"], outputs["cams"])
        return outputs

    def compute(self, images: torch.Tensor, with_attention: bool) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class CamNet(CamModel):
    """Backbone + bias-free 1x1 classifier: CAMs (B, K, h, w); logits are their spatial mean."""

    def __init__(self, backbone: nn.Module, num_classes: int, refine: str = "none"):
        super().__init__(backbone, num_classes, refine)
        self.classifier = nn.Conv2d(backbone.out_channels, num_classes, kernel_size=1, bias=False)

    def compute(self, images: torch.Tensor, with_attention: bool) -> dict[str, torch.Tensor]:
        if with_attention:
            outputs = self.backbone.extract(images, with_attention=True)
        else:
            outputs = {"features": self.backbone(images)}
        cams = self.classifier(outputs["features"])
        return {**outputs, "cams": cams, "logits": cams.mean(dim=(2, 3))}


class TransCamNet(CamModel):
    """TransCAM: the Conformer's CNN-branch CAMs; logits = CNN logits + transformer logits."""

    def compute(self, images: torch.Tensor, with_attention: bool) -> dict[str, torch.Tensor]:
        return self.backbone(images, with_attention=with_attention)


HEAD_INITS = ("official", "pytorch")


class BaoNet(nn.Module):
    """CAM network + label encoder Linear(K -> D) scaling features channel-wise, then a 3x3 conv to K+1.

    The activation map ``am`` is refined by the same attention as the CAMs when that is on.
    ``head_init``: ``official`` initialises as the official network's ``_init_weights`` does: the
    label encoder (a Linear) truncated normal std 0.02 with bias 0, the activation-map convolution
    (a Conv2d) Kaiming normal (fan_out, ReLU) with PyTorch's default bias; ``pytorch`` leaves both at
    PyTorch's defaults (what this project did before; the encoder's weights 6-17x larger)."""

    def __init__(self, cam_net: CamModel, use_label_encoder: bool = True, head_init: str = "official"):
        super().__init__()
        if head_init not in HEAD_INITS:
            raise ValueError(f"bao.head_init must be one of {HEAD_INITS}, got {head_init!r}")
        self.cam_net = cam_net
        self.cam_frozen = False
        channels, num_classes = cam_net.out_channels, cam_net.num_classes
        self.label_encoder = nn.Linear(num_classes, channels) if use_label_encoder else None
        self.am_head = nn.Conv2d(channels, num_classes + 1, kernel_size=3, padding=1)
        if head_init == "official":
            if self.label_encoder is not None:
                trunc_normal_(self.label_encoder.weight, std=0.02)
                nn.init.zeros_(self.label_encoder.bias)
            nn.init.kaiming_normal_(self.am_head.weight, mode="fan_out", nonlinearity="relu")

    @property
    def normalization(self) -> Normalization:
        return self.cam_net.normalization

    def freeze_cam_net(self) -> BaoNet:
        """No gradient and eval-mode BN for the CAM network for good: ``train()`` then trains the
        head only, so the CAMs stay exactly the trained CAM network's."""
        self.cam_frozen = True
        self.cam_net.requires_grad_(False)
        return self.train(self.training)

    def train(self, mode: bool = True) -> BaoNet:
        super().train(mode)
        if self.cam_frozen:
            self.cam_net.eval()
        return self

    def feature_geometry(self, input_size: tuple[int, int]) -> FeatureGeometry:
        """The activation map is a 3x3 (padding 1) conv of the CAM network's features: same cells."""
        return self.cam_net.feature_geometry(input_size)

    def forward(self, images: torch.Tensor, labels: torch.Tensor, refine: bool = False) -> dict[str, torch.Tensor]:
        outputs = self.cam_net(images, refine=refine)
        features = outputs["features"]
        if self.label_encoder is not None:
            features = features * self.label_encoder(labels.to(features.dtype))[:, :, None, None]
        am = self.am_head(features)
        outputs["am"] = attention_refine(outputs["attention"], am) if "attention" in outputs else am
        return outputs
