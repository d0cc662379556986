"""DeepLabV3 (torchvision's ASPP head) on a timm backbone, so the backbone size is a param."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models.segmentation.deeplabv3 import DeepLabHead

from bao.models.backbones import create_backbone
from bao.models.geometry import FeatureGeometry


class CentreTapConv2d(nn.Conv2d):
    """A dilated 3x3 convolution (padding = dilation) that, on a map no larger than its dilation,
    reads only its centre tap: every other tap lands in the zero padding. Same outputs and
    gradients, a ninth of the work: ASPP's rates 12/24/36 on the demo's 6 x 6 maps."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] <= self.dilation[0] and x.shape[-1] <= self.dilation[1]:
            return F.conv2d(x, self.weight[:, :, 1:2, 1:2], self.bias)
        return super().forward(x)


def _with_centre_tap(conv: nn.Conv2d) -> nn.Conv2d:
    if conv.kernel_size != (3, 3) or conv.stride != (1, 1) or conv.groups != 1 or conv.padding != conv.dilation:
        return conv
    fast = nn.utils.skip_init(CentreTapConv2d, conv.in_channels, conv.out_channels, 3, padding=conv.padding,
                              dilation=conv.dilation, bias=conv.bias is not None)  # draws no random numbers
    fast.load_state_dict(conv.state_dict())
    return fast


class DeepLabV3(nn.Module):
    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = DeepLabHead(backbone.out_channels, num_classes)
        for branch in self.head[0].convs[1:]:  # the atrous branches (ASPPConv: conv, BN, ReLU); not the 1x1 or pooling
            if isinstance(branch[0], nn.Conv2d):
                branch[0] = _with_centre_tap(branch[0])
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
