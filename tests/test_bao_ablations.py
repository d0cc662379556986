"""The paper's ablation switches (bao.label_encoder, bao.loss, bao.teacher, bao.eps = 0), each honoured,
and the library path from CAM training to gallery on a tiny synthetic dataset."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import bao.train.bao as bao_training
from bao.config import RuntimeConfig, load_params
from bao.data.datasets import ImageLabelDataset
from bao.data.palette import read_mask
from bao.infer import pipeline
from bao.infer.pipeline import bao_gallery, bao_pseudo_labels, gallery_rows
from bao.losses import balanced_soft_ce, smooth_targets, soft_ce, teacher_targets
from bao.models import CamNet, create_bao_net
from bao.models.backbones import TimmFeatures
from bao.plots import save_gallery
from bao.train.bao import TeacherHook, bao_losses, make_teacher, train_bao_net
from bao.train.cam import train_cam_net
from bao.train.common import save_model
from pipeline_utils import RecordingLive, tiny_synthetic_manifest

PARAMS = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
TINY_LOADER = dict(epochs=1, batch_size=4, crop_size=64, resize_long=(56, 72))


def bao_cfg(**changes):
    """The teacher switches matter where the CAM network learns: the official single lr (``cam_lr: null``)."""
    return PARAMS.bao.model_copy(update={**TINY_LOADER, "cam_lr": None, **changes})


def random_case(seed: int = 0):
    torch.manual_seed(seed)
    outputs = {"am": torch.randn(2, 4, 5, 5), "logits": torch.randn(2, 3)}
    return outputs, torch.randn(2, 3, 5, 5), torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])


def test_loss_switch_selects_balanced_or_plain_soft_ce():
    outputs, teacher_cams, labels = random_case()
    hard = teacher_targets(teacher_cams, labels)
    soft = smooth_targets(hard, 4, 0.4)
    balanced = bao_losses(outputs, teacher_cams, labels, bao_cfg(loss="balanced"), epoch=0)["loss_bal"]
    assert torch.allclose(balanced, balanced_soft_ce(outputs["am"], soft, hard, 1.0))  # the official weight cancels
    applied = bao_losses(outputs, teacher_cams, labels, bao_cfg(loss="balanced", fg_weight_mode="applied"), epoch=0)["loss_bal"]
    assert torch.allclose(applied, balanced_soft_ce(outputs["am"], soft, hard, 0.5))
    plain = bao_losses(outputs, teacher_cams, labels, bao_cfg(loss="ce"), epoch=0)["loss_bal"]
    assert torch.allclose(plain, soft_ce(outputs["am"], soft))
    assert not torch.allclose(plain, balanced)


def test_eps_zero_disables_label_smoothing():
    outputs, teacher_cams, labels = random_case(1)
    hard = teacher_targets(teacher_cams, labels)
    loss = bao_losses(outputs, teacher_cams, labels, bao_cfg(loss="ce", eps=0.0), epoch=3)["loss_bal"]
    assert torch.allclose(loss, F.cross_entropy(outputs["am"], hard))


def test_label_encoder_switch():
    backbone = lambda: TimmFeatures("test_resnet", False, 16)  # noqa: E731
    images = torch.randn(1, 3, 64, 64)
    a, b = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.0, 1.0, 1.0]])
    with_encoder = create_bao_net(PARAMS.model.model_copy(update={"backbone": "test_resnet", "pretrained": False}), 3).eval()
    without = type(with_encoder)(CamNet(backbone(), 3), use_label_encoder=False).eval()
    assert without.label_encoder is None
    assert not any("label_encoder" in key for key in without.state_dict())
    with torch.no_grad():
        assert torch.equal(without(images, a)["am"], without(images, b)["am"])
        assert not torch.allclose(with_encoder(images, a)["am"], with_encoder(images, b)["am"])


def test_teacher_switch_builds_a_hook_only_for_ema():
    student = create_bao_net(PARAMS.model.model_copy(update={"backbone": "test_resnet", "pretrained": False}), 3)
    teacher, hooks = make_teacher(student, bao_cfg(teacher="ema"), iters_per_epoch=4)
    assert len(hooks) == 1 and isinstance(hooks[0], TeacherHook)
    frozen, none_hooks = make_teacher(student, bao_cfg(teacher="none"), iters_per_epoch=4)
    assert none_hooks == []
    assert not any(p.requires_grad for p in frozen.parameters())
    assert all(p is not q for p, q in zip(frozen.parameters(), student.cam_net.parameters()))


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return tiny_synthetic_manifest(tmp_path_factory.mktemp("tiny"))


@pytest.mark.parametrize(
    "backbone,refine,switches",
    [
        ("test_resnet", "none", dict(teacher="none", loss="ce", label_encoder=False)),
        ("test_vit", "attention", dict(teacher="ema", loss="balanced", label_encoder=True)),
    ],
)
def test_tiny_run_from_cam_training_to_gallery(manifest, tmp_path, monkeypatch, backbone, refine, switches):
    device = torch.device("cpu")
    model_cfg = PARAMS.model.model_copy(update={"backbone": backbone, "refine": refine, "pretrained": False})
    cam_cfg = PARAMS.train_cam.model_copy(update=TINY_LOADER)
    torch.manual_seed(0)
    cam_net, cam_metrics = train_cam_net(manifest, model_cfg, cam_cfg, device=device, seed=0, live=RecordingLive())
    save_model(tmp_path / "cam.pt", cam_net, {})
    teachers = []
    monkeypatch.setattr(bao_training, "make_teacher", lambda *a: teachers.append(make_teacher(*a)) or teachers[-1])
    cfg = bao_cfg(**switches)
    bao_live = RecordingLive()
    student, metrics = train_bao_net(manifest, model_cfg, cfg, str(tmp_path / "cam.pt"), device=device, seed=0, live=bao_live)
    assert all(math.isfinite(value) for value in metrics.values())
    assert [value for name, value in bao_live.metrics if name == "train/lr"] == [cfg.lr]  # constant: the official schedule
    assert (student.label_encoder is not None) == cfg.label_encoder
    # teacher "none" keeps the trained CAM network's weights; "ema" follows the student (parameters:
    # the official train-mode teacher's BN running statistics move in either case, unused)
    teacher_moved = any(not torch.equal(t, c) for t, c in zip(teachers[0][0].parameters(), cam_net.parameters()))
    assert teacher_moved == (cfg.teacher == "ema")

    crf = PARAMS.crf.model_copy(update={"enabled": True})
    pseudo_cfg = PARAMS.pseudo_label.model_copy(update={"scales": (64,)})
    results = bao_pseudo_labels(student, manifest, pseudo_cfg, crf=crf, device=device, out_dir=tmp_path)
    assert len(list(tmp_path.glob("syn_*.png"))) == 8
    for name in ("bao", "bao_crf"):
        assert 0.0 <= results[name]["miou"] <= 1.0
    gallery = bao_gallery(student, manifest, pseudo_cfg, crf, device=device, indices=[3, 1])
    assert list(gallery) == [3, 1] and all({"bao", "bao_crf", "background"} <= set(g) for g in gallery.values())
    for index in gallery:  # the gallery's second pass gives the CRF labels the full pass saved
        image_id = ImageLabelDataset(manifest, "train").image_id(index)
        assert np.array_equal(gallery[index]["bao_crf"], read_mask(tmp_path / f"{image_id}.png"))
    seen_options = []
    real_iterate = pipeline.iterate_multiscale
    monkeypatch.setattr(pipeline, "iterate_multiscale", lambda *a, **kw: seen_options.append((kw["amp"], kw["channels_last"])) or real_iterate(*a, **kw))
    runtime = RuntimeConfig(amp=False, channels_last=True)
    rows = gallery_rows(cam_net, manifest, pseudo_cfg, device, bao=gallery, threshold=0.3, runtime=runtime)
    assert seen_options == [(False, True)]  # the baseline panel runs as the stage's sweep ran
    assert all(row["baseline"].shape == row["image"].shape[:2] == row["gt"].shape for row in rows)
    assert np.isfinite(rows[0]["background"]).all()
    save_gallery(tmp_path / "gallery.png", rows, 0.3)
    assert (tmp_path / "gallery.png").stat().st_size > 1000


class TransformSeen(Exception):
    """Raised by a spy once the stage has built its transform: nothing needs to train."""


@pytest.mark.parametrize("module,call", [("cam", "train_cam_net"), ("bao", "train_bao_net"), ("seg", "train_segmentation_net")])
def test_training_transforms_use_the_backbones_normalization(manifest, monkeypatch, module, call):
    """tf_efficientnet_lite0 expects mean = std = 0.5 (timm's pretrained config), not ImageNet's."""
    import importlib

    from bao.data.transforms import Normalization

    trainer = importlib.import_module(f"bao.train.{module}")
    seen = []

    def spy(*args, normalization):
        seen.append(normalization)
        raise TransformSeen

    monkeypatch.setattr(trainer, "train_transform", spy)
    model_cfg = PARAMS.model.model_copy(update={"backbone": "tf_efficientnet_lite0", "pretrained": False})
    device, live = torch.device("cpu"), RecordingLive()
    with pytest.raises(TransformSeen):
        if module == "cam":
            trainer.train_cam_net(manifest, model_cfg, PARAMS.train_cam, device=device, seed=0, live=live)
        elif module == "bao":
            trainer.train_bao_net(manifest, model_cfg, PARAMS.bao, "unused.pt", device=device, seed=0, live=live)
        else:
            seg_cfg = PARAMS.train_seg.model_copy(update={"backbone": "tf_efficientnet_lite0", "pretrained": False})
            trainer.train_segmentation_net(manifest, "unused", seg_cfg, device=device, seed=0, live=live)
    assert seen == [Normalization((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))]


def test_inference_images_use_the_models_normalization(manifest, monkeypatch):
    """Pseudo-labelling loads uint8 images and normalises each resized scale with the model's mean/std."""

    seen = {}

    def spy(*args, normalize, **kwargs):
        seen["normalize"] = normalize
        return iter(())

    monkeypatch.setattr(pipeline, "iterate_multiscale", spy)
    net = create_bao_net(PARAMS.model.model_copy(update={"backbone": "tf_efficientnet_lite0", "pretrained": False}), 3)
    dataset, loader = pipeline._train_images(manifest, PARAMS.pseudo_label, RuntimeConfig())
    list(pipeline._multiscale(net, dataset, loader, device=torch.device("cpu"), cfg=PARAMS.pseudo_label, with_am=True, desc="t", runtime=RuntimeConfig()))
    raw = torch.tensor([[[0]], [[128]], [[255]]], dtype=torch.uint8)
    expected = (raw.float() / 255 - 0.5) / 0.5  # EfficientNet-Lite's 0.5/0.5, not ImageNet's
    assert torch.allclose(seen["normalize"](raw), expected, atol=1e-6)
