"""CAM classifier and the BAO head that adds a label-conditioned background-aware activation map."""

from __future__ import annotations

import torch
from torch import nn


class CamNet(nn.Module):
    """Backbone + bias-free 1x1 classifier: CAMs (B, K, h, w); logits are their spatial mean."""

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.classifier = nn.Conv2d(backbone.out_channels, num_classes, kernel_size=1, bias=False)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        features = self.backbone(images)
        cams = self.classifier(features)
        return {"features": features, "cams": cams, "logits": cams.mean(dim=(2, 3))}


class BaoNet(nn.Module):
    """CAM network + label encoder Linear(K -> D) scaling features channel-wise, then a 3x3 conv to K+1."""

    def __init__(self, cam_net: CamNet, use_label_encoder: bool = True):
        super().__init__()
        self.cam_net = cam_net
        channels, num_classes = cam_net.backbone.out_channels, cam_net.num_classes
        self.label_encoder = nn.Linear(num_classes, channels) if use_label_encoder else None
        self.am_head = nn.Conv2d(channels, num_classes + 1, kernel_size=3, padding=1)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = self.cam_net(images)
        features = outputs["features"]
        if self.label_encoder is not None:
            features = features * self.label_encoder(labels.to(features.dtype))[:, :, None, None]
        outputs["am"] = self.am_head(features)
        return outputs
