"""DeepLabV3 (torchvision's ASPP head) on a timm backbone, so the backbone size is a param."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models.segmentation.deeplabv3 import DeepLabHead

from bao.models.backbones import create_backbone
from bao.models.geometry import FeatureGeometry


class DeepLabV3(nn.Module):
    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = DeepLabHead(backbone.out_channels, num_classes)
        self.normalization = backbone.normalization  # input mean/std of the encoder's pretrained weights

    def feature_geometry(self, input_size: tuple[int, int]) -> FeatureGeometry:
        """Of the head's logits before the upsampling in ``forward`` (the ASPP head keeps the grid)."""
        return self.backbone.feature_geometry(input_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.backbone(images))
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


def create_deeplab(backbone: str, num_classes: int, pretrained: bool, output_stride: int) -> DeepLabV3:
    """``num_classes`` counts background (K + 1)."""
    return DeepLabV3(create_backbone(backbone, pretrained, output_stride), num_classes)
