"""Model builders: every stage creates its network through these, from typed config.

``model.backbone`` picks a family from the registry below: a Conformer variant (TransCAM), a
timm Vision Transformer, or any other timm model (a CNN read through ``features_only``).
"""

from __future__ import annotations

from collections.abc import Callable

from bao.config import ModelConfig
from bao.models.backbones import TimmFeatures, create_backbone, load_backbone_checkpoint
from bao.models.cam import BaoNet, CamModel, CamNet, TransCamNet
from bao.models.conformer import CONFORMER_VARIANTS, create_conformer
from bao.models.deeplab import create_deeplab
from bao.models.vit import TimmViT, is_timm_vit


def _cnn(cfg: ModelConfig, num_classes: int, pretrained: bool) -> CamModel:
    return CamNet(TimmFeatures(cfg.backbone, pretrained, cfg.output_stride), num_classes, cfg.refine)


def _vit(cfg: ModelConfig, num_classes: int, pretrained: bool) -> CamModel:
    return CamNet(TimmViT(cfg.backbone, pretrained), num_classes, cfg.refine)


def _conformer(cfg: ModelConfig, num_classes: int, pretrained: bool) -> CamModel:
    if pretrained:
        raise ValueError(
            f"model.pretrained: no download exists for {cfg.backbone}; set pretrained: false and "
            "model.checkpoint: <path to the official Conformer or TransCAM weights>"
        )
    return TransCamNet(create_conformer(cfg.backbone, num_classes), num_classes, cfg.refine)


# family -> builder(cfg, num_classes, pretrained); tests loop over this registry.
CAM_FAMILIES: dict[str, Callable[[ModelConfig, int, bool], CamModel]] = {"cnn": _cnn, "vit": _vit, "conformer": _conformer}


def backbone_name_problem(name: str, *, conformer: bool) -> str | None:
    """Why ``name`` is no backbone we can build (None if it is): a timm model, or with
    ``conformer`` one of our Conformer variants."""
    import timm

    if timm.is_model(name) or (conformer and name in CONFORMER_VARIANTS):
        return None
    return f"{name!r} is neither a timm model nor one of {sorted(CONFORMER_VARIANTS)}" if conformer else f"{name!r} is not a timm model"


def backbone_family(name: str) -> str:
    if name in CONFORMER_VARIANTS:
        return "conformer"
    problem = backbone_name_problem(name, conformer=True)
    if problem:
        raise ValueError(f"model.backbone: {problem}")
    return "vit" if is_timm_vit(name) else "cnn"


def create_cam_net(cfg: ModelConfig, num_classes: int) -> CamModel:
    """The CAM network of ``cfg``, with ``model.checkpoint`` loaded into its backbone if set."""
    net = CAM_FAMILIES[backbone_family(cfg.backbone)](cfg, num_classes, cfg.pretrained)
    if cfg.checkpoint:
        load_backbone_checkpoint(net.backbone, cfg.checkpoint)
    return net


def create_bao_net(cfg: ModelConfig, num_classes: int, use_label_encoder: bool = True, head_init: str = "official") -> BaoNet:
    # The backbone's own weights come from the CAM checkpoint, so no pretrained download here.
    cam_net = CAM_FAMILIES[backbone_family(cfg.backbone)](cfg, num_classes, False)
    return BaoNet(cam_net, use_label_encoder=use_label_encoder, head_init=head_init)


__all__ = [
    "CAM_FAMILIES", "BaoNet", "CamModel", "CamNet", "TransCamNet", "backbone_family", "backbone_name_problem",
    "create_backbone", "create_bao_net", "create_cam_net", "create_deeplab",
]
