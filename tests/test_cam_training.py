"""The CAM classifier's backbone lr (train_cam.backbone_lr): the new classifier and the pretrained
backbone in their own AdamW groups."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from bao.config import ParamsError, load_params
from bao.models import create_cam_net
from bao.train.cam import train_cam_net
from bao.train.common import backbone_lr_groups

from pipeline_utils import RecordingLive, tiny_synthetic_manifest

PARAMS_FILE = Path(__file__).resolve().parents[1] / "params.yaml"
PARAMS = load_params(PARAMS_FILE)
TINY_MODEL = PARAMS.model.model_copy(update={"backbone": "test_resnet", "pretrained": False})


def test_backbone_lr_null_is_one_group_and_a_value_splits_classifier_and_backbone():
    model = create_cam_net(TINY_MODEL, 3)
    assert backbone_lr_groups(model, lr=1e-3, backbone_lr=None, key="train_cam.backbone_lr") is None
    groups = backbone_lr_groups(model, lr=1e-3, backbone_lr=1e-4, key="train_cam.backbone_lr")
    assert [group["lr"] for group in groups] == [1e-3, 1e-4]
    head, backbone = ({id(p) for p in group["params"]} for group in groups)
    assert head == {id(p) for p in model.classifier.parameters()} and backbone == {id(p) for p in model.backbone.parameters()}


def test_a_model_without_layers_outside_its_backbone_names_the_key():
    model = nn.Module()
    model.backbone = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="train_cam.backbone_lr: Module has no layers outside its backbone"):
        backbone_lr_groups(model, lr=1e-3, backbone_lr=1e-4, key="train_cam.backbone_lr")


def test_bad_backbone_lr_names_its_key(tmp_path):
    text = re.sub(r"(\ntrain_cam:(?:\n .*)*?\n  backbone_lr:) \S+", r"\1 0.0", PARAMS_FILE.read_text())
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(ParamsError, match="train_cam.backbone_lr"):
        load_params(tmp_path / "params.yaml")


def test_tiny_run_moves_the_classifier_at_lr_and_the_backbone_at_backbone_lr(tmp_path):
    manifest = tiny_synthetic_manifest(tmp_path)
    torch.manual_seed(0)
    start = create_cam_net(TINY_MODEL, manifest.num_classes)
    cfg = PARAMS.train_cam.model_copy(update=dict(epochs=1, batch_size=4, crop_size=64, resize_long=(56, 72), lr=1e-2, backbone_lr=1e-9))
    torch.manual_seed(0)
    model, metrics = train_cam_net(manifest, TINY_MODEL, cfg, device=torch.device("cpu"), seed=0, live=RecordingLive())
    moved = lambda a, b: max((x - y).abs().max().item() for x, y in zip(a.parameters(), b.parameters()))  # noqa: E731
    assert moved(model.backbone, start.backbone) < 1e-6 < 1e-3 < moved(model.classifier, start.classifier)
    assert 0.0 <= metrics["val_map"] <= 1.0
