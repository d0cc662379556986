"""Local backbone weights (model.checkpoint): the official Conformer layout, strict loading, clear errors."""

from __future__ import annotations

import pytest
import timm
import torch

from bao.config import ModelConfig
from bao.models import create_cam_net
from bao.models.conformer import create_conformer


def _bn(name: str) -> list[str]:
    return [f"{name}.{leaf}" for leaf in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]


# The published Conformer-S / TransCAM checkpoints' key layout, module by module.
BOTTLENECK = ["conv1.weight", *_bn("bn1"), "conv2.weight", *_bn("bn2"), "conv3.weight", *_bn("bn3")]
RESIDUAL = ["residual_conv.weight", *_bn("residual_bn")]
TRANSFORMER_BLOCK = [
    "norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
    "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias",
]
SQUEEZE = ["conv_project.weight", "conv_project.bias", "ln.weight", "ln.bias"]
EXPAND = ["conv_project.weight", "conv_project.bias", *_bn("bn")]
STAGE_OPENERS = {5, 9}  # first block of stages 2 and 3: strided bottleneck with a projection
LAST = 12  # its fusion bottleneck has a projection too


def official_conformer_s_keys() -> set[str]:
    keys = {"cls_token", "conv1.weight", *_bn("bn1"), "trans_patch_conv.weight", "trans_patch_conv.bias"}
    keys |= {f"conv_1.{key}" for key in BOTTLENECK + RESIDUAL}
    keys |= {f"trans_1.{key}" for key in TRANSFORMER_BLOCK}
    for index in range(2, LAST + 1):
        prefix = f"conv_trans_{index}"
        keys |= {f"{prefix}.cnn_block.{key}" for key in BOTTLENECK + (RESIDUAL if index in STAGE_OPENERS else [])}
        keys |= {f"{prefix}.fusion_block.{key}" for key in BOTTLENECK + (RESIDUAL if index == LAST else [])}
        keys |= {f"{prefix}.squeeze_block.{key}" for key in SQUEEZE}
        keys |= {f"{prefix}.expand_block.{key}" for key in EXPAND}
        keys |= {f"{prefix}.trans_block.{key}" for key in TRANSFORMER_BLOCK}
    return keys | {"trans_norm.weight", "trans_norm.bias", "trans_cls_head.weight", "trans_cls_head.bias",
                   "conv_cls_head.weight", "conv_cls_head.bias"}


OFFICIAL_SHAPES = {
    "cls_token": (1, 1, 384),
    "conv1.weight": (64, 3, 7, 7),
    "conv_1.conv1.weight": (64, 64, 1, 1),
    "conv_1.residual_conv.weight": (256, 64, 1, 1),
    "trans_patch_conv.weight": (384, 64, 4, 4),
    "trans_1.attn.qkv.weight": (1152, 384),
    "trans_1.mlp.fc1.weight": (1536, 384),
    "conv_trans_2.squeeze_block.conv_project.weight": (384, 64, 1, 1),
    "conv_trans_2.expand_block.conv_project.weight": (64, 384, 1, 1),
    "conv_trans_5.cnn_block.conv2.weight": (128, 128, 3, 3),
    "conv_trans_5.cnn_block.residual_conv.weight": (512, 256, 1, 1),
    "conv_trans_9.cnn_block.residual_conv.weight": (1024, 512, 1, 1),
    "conv_trans_12.fusion_block.residual_conv.weight": (1024, 1024, 1, 1),
    # TransCAM's heads for VOC (20 classes + an unused background slot); ImageNet's are Linear (1000, D)
    "conv_cls_head.weight": (21, 1024, 3, 3),
    "conv_cls_head.bias": (21,),
    "trans_cls_head.weight": (21, 384),
}


@pytest.fixture(scope="module")
def conformer_s_state() -> dict[str, torch.Tensor]:
    return create_conformer("conformer_small_patch16", 20).state_dict()


def test_conformer_s_keys_match_the_official_layout(conformer_s_state):
    ours, official = set(conformer_s_state), official_conformer_s_keys()
    assert sorted(official - ours) == [] and sorted(ours - official) == []
    for key, shape in OFFICIAL_SHAPES.items():
        assert tuple(conformer_s_state[key].shape) == shape, key
    parameters = sum(v.numel() for k, v in conformer_s_state.items() if "running_" not in k and "num_batches" not in k and "cls_head" not in k)
    imagenet_heads = (1024 + 1) * 1000 + (384 + 1) * 1000
    assert round((parameters + imagenet_heads) / 1e6, 1) == 37.7  # Conformer-S as published: 37.7 M parameters


def _config(backbone: str, checkpoint) -> ModelConfig:
    return ModelConfig(backbone=backbone, pretrained=False, output_stride=16, checkpoint=str(checkpoint))


def _equal_except_heads(loaded: dict, saved: dict, heads: tuple[str, ...]) -> None:
    for key, value in saved.items():
        if not key.startswith(heads):
            assert torch.equal(loaded[key], value), key


def test_imagenet_style_conformer_checkpoint_loads_without_its_heads(tmp_path):
    torch.manual_seed(0)
    saved = create_conformer("conformer_test", 1000).state_dict()  # 1000-class heads, like ImageNet
    torch.save({"model": saved}, tmp_path / "conformer.pth")
    net = create_cam_net(_config("conformer_test", tmp_path / "conformer.pth"), 3)
    loaded = net.backbone.state_dict()
    _equal_except_heads(loaded, saved, ("conv_cls_head.", "trans_cls_head."))
    assert loaded["conv_cls_head.weight"].shape == (4, 64, 3, 3)


def test_checkpoint_with_our_classes_loads_its_heads_too(tmp_path):
    torch.manual_seed(0)
    saved = create_conformer("conformer_test", 3).state_dict()
    torch.save(saved, tmp_path / "transcam.pth")
    loaded = create_cam_net(_config("conformer_test", tmp_path / "transcam.pth"), 3).backbone.state_dict()
    _equal_except_heads(loaded, saved, ())


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda state: state.pop("conv_trans_2.squeeze_block.ln.weight"), "missing keys .*conv_trans_2.squeeze_block.ln.weight"),
        (lambda state: state.__setitem__("pos_embed", torch.zeros(1)), "unexpected keys .*pos_embed"),
        (lambda state: state.__setitem__("trans_patch_conv.weight", torch.zeros(1, 2)), r"shape mismatches .*trans_patch_conv.weight \(1, 2\)"),
    ],
)
def test_a_checkpoint_that_does_not_fit_is_refused_by_key(tmp_path, change, message):
    state = create_conformer("conformer_test", 3).state_dict()
    change(state)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=message):
        create_cam_net(_config("conformer_test", tmp_path / "bad.pth"), 3)


def test_missing_checkpoint_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        create_cam_net(_config("conformer_test", tmp_path / "nowhere.pth"), 3)


@pytest.mark.parametrize("name", ["test_vit", "test_resnet"])
def test_timm_classifier_checkpoints_load_into_cam_backbones(tmp_path, name):
    torch.manual_seed(0)
    saved = timm.create_model(name, num_classes=1000).state_dict()  # a timm classifier, head included
    torch.save(saved, tmp_path / "timm.pth")
    net = create_cam_net(_config(name, tmp_path / "timm.pth"), 3)
    loaded = net.backbone.checkpoint_module().state_dict()
    assert len(loaded) > 10
    for key, value in loaded.items():
        assert torch.equal(value, saved[key]), key
