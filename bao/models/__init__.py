"""Model builders: every stage creates its network through these, from typed config."""

from __future__ import annotations

from bao.config import ModelConfig
from bao.models.backbones import create_backbone
from bao.models.cam import BaoNet, CamNet
from bao.models.deeplab import create_deeplab


def create_cam_net(cfg: ModelConfig, num_classes: int) -> CamNet:
    return CamNet(create_backbone(cfg.backbone, cfg.pretrained, cfg.output_stride, cfg.checkpoint), num_classes)


def create_bao_net(cfg: ModelConfig, num_classes: int, use_label_encoder: bool = True) -> BaoNet:
    # The backbone's own weights come from the CAM checkpoint, so no pretrained download here.
    cam_net = CamNet(create_backbone(cfg.backbone, False, cfg.output_stride), num_classes)
    return BaoNet(cam_net, use_label_encoder=use_label_encoder)


__all__ = ["BaoNet", "CamNet", "create_bao_net", "create_cam_net", "create_deeplab"]
