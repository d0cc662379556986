"""DeepLab's encoder lr (train_seg.backbone_lr), the scale val images are segmented at (train_seg.eval_resize)
and the true masks as its labels (train_seg.labels: masks, the fully supervised ceiling)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from bao.config import ModelConfig, ParamsError, load_params
from bao.infer.predict import labels_argmax, segment_logits
from bao.models import create_cam_net, create_deeplab
from bao.io import CheckpointError
from bao.train.common import save_model
from bao.infer.segment import score_predictions
from bao.train.seg import encoder_from_cam_network, seg_param_groups, train_segmentation_net, training_labels_dir

from pipeline_utils import RecordingLive, tiny_synthetic_manifest

PARAMS_FILE = Path(__file__).resolve().parents[1] / "params.yaml"
SEG = load_params(PARAMS_FILE).train_seg


def test_backbone_lr_null_is_one_group_and_a_value_splits_encoder_and_head():
    model = create_deeplab("test_resnet", 4, False, 16)
    assert seg_param_groups(model, SEG.model_copy(update={"backbone_lr": None})) is None
    groups = seg_param_groups(model, SEG.model_copy(update={"lr": 1e-3, "backbone_lr": 1e-4}))
    assert [group["lr"] for group in groups] == [1e-3, 1e-4]
    head, encoder = ({id(p) for p in group["params"]} for group in groups)
    assert encoder == {id(p) for p in model.backbone.parameters()} and head == {id(p) for p in model.head.parameters()}
    assert head | encoder == {id(p) for p in model.parameters()} and not head & encoder


def test_eval_long_side_is_the_middle_of_resize_long_or_none():
    assert SEG.model_copy(update={"resize_long": (192, 320), "eval_resize": "train"}).eval_long_side() == 256
    assert SEG.model_copy(update={"resize_long": (72, 121), "eval_resize": "train"}).eval_long_side() == 96  # round(96.5): banker's
    assert SEG.model_copy(update={"eval_resize": "native"}).eval_long_side() is None


@pytest.mark.parametrize(("key", "value"), [("backbone_lr", "0.0"), ("eval_resize", "full")])
def test_bad_seg_params_name_their_key(tmp_path, key, value):
    text = re.sub(rf"(\n  {key}:) \S+", rf"\1 {value}", PARAMS_FILE.read_text())
    assert f"{key}: {value}" in text
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(ParamsError, match=f"train_seg.{key}"):
        load_params(tmp_path / "params.yaml")


def test_encoder_from_the_cam_network_takes_its_backbone_weights(tmp_path):
    model_cfg = ModelConfig(backbone="test_resnet", pretrained=False, output_stride=16)
    torch.manual_seed(0)
    cam_net = create_cam_net(model_cfg, 3)
    save_model(tmp_path / "cam.pt", cam_net, {"classes": ["a", "b", "c"]})
    deeplab = create_deeplab("test_resnet", 4, False, 8)  # another output stride: the same weights, other dilations
    assert not all(torch.equal(a, b) for a, b in zip(deeplab.backbone.state_dict().values(), cam_net.backbone.state_dict().values()))
    head_before = {k: v.clone() for k, v in deeplab.head.state_dict().items()}
    encoder_from_cam_network(deeplab, tmp_path / "cam.pt", model_cfg, ["a", "b", "c"])
    cam_state = cam_net.backbone.state_dict()
    assert all(torch.equal(value, cam_state[key]) for key, value in deeplab.backbone.state_dict().items())
    assert all(torch.equal(value, head_before[key]) for key, value in deeplab.head.state_dict().items())  # the new head stays new
    with pytest.raises(CheckpointError, match="cam.pt: trained for 3 classes"):
        encoder_from_cam_network(deeplab, tmp_path / "cam.pt", model_cfg, ["a", "b", "x"])


def test_encoder_from_the_cam_network_needs_the_same_backbone(tmp_path):
    text = PARAMS_FILE.read_text().replace("\n  encoder_init: imagenet", "\n  encoder_init: cam_network")
    assert "encoder_init: cam_network" in text
    (tmp_path / "params.yaml").write_text(text)
    assert load_params(tmp_path / "params.yaml").train_seg.encoder_init == "cam_network"  # both tf_efficientnet_lite0
    (tmp_path / "params.yaml").write_text(text.replace("  backbone: tf_efficientnet_lite0  # demo; the usual", "  backbone: resnet18  # demo; the usual"))
    with pytest.raises(ParamsError, match=r"train_seg.encoder_init: cam_network .* train_seg.backbone \(resnet18\) must be model.backbone"):
        load_params(tmp_path / "params.yaml")


class LeftHalfNet(nn.Module):
    """Class 1 on the left half of whatever it is given, class 0 on the right; records its input size."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.seen = tuple(images.shape[-2:])
        logits = torch.zeros(images.shape[0], 2, *images.shape[-2:])
        logits[:, 1, :, : images.shape[-1] // 2] = 1.0
        return logits


def test_prediction_at_the_training_scale_comes_back_at_full_size():
    net, image = LeftHalfNet(), torch.rand(3, 60, 120)
    native = labels_argmax(segment_logits(net, image, torch.device("cpu"), long_side=None))
    assert net.seen == (60, 120) and native.shape == (60, 120)
    resized = labels_argmax(segment_logits(net, image, torch.device("cpu"), long_side=40))
    assert net.seen == (20, 40)  # aspect ratio kept
    assert resized.shape == (60, 120)
    assert (resized[:, :58] == 1).all() and (resized[:, 62:] == 0).all()  # the boundary stays in place
    assert (native == resized)[:, :58].all()


def test_given_labels_keep_background_and_the_image_classes_only():
    logits = torch.zeros(4, 2, 3)
    logits[3] = 5.0  # class 3 (absent) scores highest everywhere
    logits[1, :, 0] = 2.0
    assert (labels_argmax(logits) == 3).all()
    given = labels_argmax(logits, torch.tensor([1.0, 0.0, 0.0]))
    assert (given[:, 0] == 1).all() and (given[:, 1:] == 0).all()


def test_masks_as_labels_train_on_the_manifest_masks_and_score_them_as_perfect(tmp_path):
    manifest = tiny_synthetic_manifest(tmp_path)
    cfg = SEG.model_copy(update=dict(labels="masks", backbone="test_resnet", pretrained=False, epochs=1, batch_size=4, crop_size=64, resize_long=(56, 72)))
    assert training_labels_dir(cfg, bao="b", threshold="t") is None
    model, metrics = train_segmentation_net(manifest, None, cfg, device=torch.device("cpu"), seed=0, live=RecordingLive())
    assert torch.isfinite(torch.tensor(metrics["final_loss"]))
    perfect = score_predictions(manifest, "train", None)
    assert perfect["miou"] == 1.0 and set(perfect["per_class_iou"]) == {"background", *manifest.classes}
    other = tmp_path / "other"
    other.mkdir()
    for row in manifest.split("train").itertuples():  # all background: the same scoring, not a constant
        Image.fromarray(np.zeros_like(np.array(Image.open(manifest.resolve(row.mask_path))))).save(other / f"{row.image_id}.png")
    assert score_predictions(manifest, "train", other)["miou"] < 0.5


def test_masks_as_labels_without_every_training_mask_name_the_key(tmp_path):
    manifest = tiny_synthetic_manifest(tmp_path)
    table = manifest.table.copy()
    table.loc[table.index[table["split"] == "train"][0], "mask_path"] = ""
    manifest = dataclasses.replace(manifest, table=table)
    cfg = SEG.model_copy(update=dict(labels="masks", backbone="test_resnet", pretrained=False, epochs=1, batch_size=4, crop_size=64, resize_long=(56, 72)))
    with pytest.raises(ValueError, match=r"train_seg.labels: masks needs the true mask of every training image, but 1 of 8 have none"):
        train_segmentation_net(manifest, None, cfg, device=torch.device("cpu"), seed=0, live=RecordingLive())


@pytest.mark.parametrize("size", [6, 12, 13, 20])  # within the dilation (centre tap only) and beyond it
def test_centre_tap_atrous_conv_matches_the_full_convolution(size):
    from bao.models.deeplab import CentreTapConv2d, _with_centre_tap

    torch.manual_seed(0)
    full = nn.Conv2d(5, 4, 3, padding=12, dilation=12, bias=True)
    fast = _with_centre_tap(full)
    assert isinstance(fast, CentreTapConv2d) and fast is not full
    x = torch.randn(2, 5, size, size, requires_grad=True)
    x_full = x.detach().clone().requires_grad_()
    out, out_full = fast(x), full(x_full)
    torch.testing.assert_close(out, out_full)
    out.square().sum().backward()
    out_full.square().sum().backward()
    torch.testing.assert_close(x.grad, x_full.grad)
    torch.testing.assert_close(fast.weight.grad, full.weight.grad)  # the off-centre taps' gradients are 0 in both
    assert _with_centre_tap(nn.Conv2d(5, 4, 3, padding=1, dilation=2)).__class__ is nn.Conv2d  # padding != dilation: kept


def test_deeplab_atrous_branches_use_the_centre_tap_conv():
    from bao.models.deeplab import CentreTapConv2d

    model = create_deeplab("resnet18", 3, pretrained=False, output_stride=16)
    kinds = [type(branch[0]) for branch in model.head[0].convs[1:4]]
    assert kinds == [CentreTapConv2d] * 3
