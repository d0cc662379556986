"""ImageNet weights offline (tf_efficientnet_lite0 from its pip package), a clear error for other
timm names without network, and input normalisation taken from the backbone's pretrained config."""

from __future__ import annotations

import logging
from collections import OrderedDict

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from bao.data.transforms import IMAGENET, Normalization, eval_transform
from bao.io import CheckpointError, load_torch
from bao.models import create_deeplab
from bao.models.backbones import TimmFeatures
from bao.models.conformer import create_conformer
from bao.models.pretrained import (
    PretrainedWeightsError, convert_in_order, create_timm_model, efficientnet_lite0_file, local_imagenet_state,
)

LITE0 = "tf_efficientnet_lite0"
MILITARY_UNIFORM = 652  # ImageNet class of matplotlib's sample photo of Grace Hopper in uniform


@pytest.fixture(scope="module")
def lite0_file_state() -> dict[str, torch.Tensor]:
    return load_torch(efficientnet_lite0_file())


def test_lite0_file_maps_in_order_onto_timm(lite0_file_state):
    reference = timm.create_model(LITE0, pretrained=False).state_dict()
    converted = local_imagenet_state(LITE0)
    assert len(lite0_file_state) == len(reference) == len(converted) == 296
    assert list(converted) == list(reference)
    for (file_key, tensor), (timm_key, value) in zip(lite0_file_state.items(), converted.items()):
        assert torch.equal(value, tensor) and value.shape == reference[timm_key].shape, (file_key, timm_key)
    # spot checks of the two layouts' names for the same tensor
    for timm_key, file_key in [("conv_stem.weight", "_conv_stem.weight"), ("bn1.running_var", "_bn0.running_var"), ("classifier.bias", "_fc.bias")]:
        assert torch.equal(converted[timm_key], lite0_file_state[file_key])


def test_in_order_conversion_refuses_other_counts_and_shapes():
    target = OrderedDict(a=torch.zeros(2, 3), b=torch.zeros(4))
    with pytest.raises(CheckpointError, match="1 tensors, but the timm model has 2"):
        convert_in_order(OrderedDict(x=torch.zeros(2, 3)), target, "file.pth")
    with pytest.raises(CheckpointError, match=r"tensor 1 y \(5,\) does not fit b \(4,\)"):
        convert_in_order(OrderedDict(x=torch.zeros(2, 3), y=torch.zeros(5)), target, "file.pth")


def test_pretrained_lite0_recognises_a_photo():
    """Grace Hopper's photo (shipped with matplotlib) comes out as 'military uniform', top-1."""
    from matplotlib import cbook

    model = create_timm_model(LITE0, True).eval()
    image = Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB").resize((224, 224), Image.BICUBIC)
    normalization = TimmFeatures(LITE0, False, 32).normalization
    tensor = eval_transform(normalization)(torch.from_numpy(np.array(image)).permute(2, 0, 1))
    with torch.no_grad():
        logits = model(tensor[None])
    assert torch.isfinite(logits).all()
    assert int(logits.argmax()) == MILITARY_UNIFORM


def test_features_backbone_takes_the_file_weights_and_names_what_it_leaves(lite0_file_state, caplog):
    with caplog.at_level(logging.WARNING, logger="bao"):
        backbone = TimmFeatures(LITE0, True, 16)
    body = backbone.body.state_dict()
    assert torch.equal(body["conv_stem.weight"], lite0_file_state["_conv_stem.weight"])
    assert torch.equal(body["blocks.6.0.bn3.running_mean"], lite0_file_state["_blocks.15._bn2.running_mean"])
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "conv_head.weight" in warning and "classifier.weight" in warning


def test_deeplab_encoder_is_pretrained_too(lite0_file_state):
    model = create_deeplab(LITE0, 4, True, 16)
    assert torch.equal(model.backbone.body.state_dict()["conv_stem.weight"], lite0_file_state["_conv_stem.weight"])
    assert model.normalization == Normalization((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def test_other_timm_names_offline_give_an_error_naming_the_model(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read at import time; the env alone is too late
    with pytest.raises(PretrainedWeightsError, match="'resnet18'"):
        create_timm_model("resnet18", True, features_only=True)


def test_normalization_comes_from_the_pretrained_config():
    lite0 = Normalization((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert TimmFeatures(LITE0, False, 16).normalization == lite0
    assert TimmFeatures("resnet18", False, 16).normalization == IMAGENET
    assert create_conformer("conformer_test", 2).normalization == IMAGENET
    image = torch.tensor([0, 255, 51], dtype=torch.uint8).view(3, 1, 1).expand(3, 1, 1).contiguous()
    # (x / 255 - 0.5) / 0.5: 0 -> -1, 255 -> 1, 51 -> -0.6
    assert eval_transform(lite0)(image).flatten().tolist() == pytest.approx([-1.0, 1.0, -0.6])
    with pytest.raises(ValueError, match="positive"):
        Normalization((0.5, 0.5, 0.5), (0.5, 0.0, 0.5))
