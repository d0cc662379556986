"""The official BAO code's behaviour as our default, the other choice behind its param, each
checked against a value worked out by hand: LR schedule, epoch-0 foreground weight, teacher mode,
TransCAM's CAM head, BAO head init, and official BAO checkpoints."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from bao.config import BaoConfig, CamTrainConfig, SegConfig, load_params
from bao.data.transforms import IMAGENET
from bao.io import CheckpointError
from bao.models import BaoNet, CamNet, create_bao_net
from bao.models.conformer import create_conformer
from bao.models.official import load_bao_weights
from bao.train.bao import TeacherHook, bao_losses, make_teacher
from bao.train.ema import TeacherSchedule
from bao.train.engine import LoopState, create_scheduler
from pipeline_utils import RecordingLive

PARAMS = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
CONFORMER_TEST = PARAMS.model.model_copy(update={"backbone": "conformer_test", "pretrained": False, "refine": "attention"})


def bao_cfg(**changes) -> BaoConfig:
    return PARAMS.bao.model_copy(update=changes)


# --- LR schedule --------------------------------------------------------------------------------

def _lr_after(schedule: str, steps: int, total: int, lr: float = 0.1) -> float:
    weight = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([weight], lr=lr)
    scheduler = create_scheduler(optimizer, total, schedule)
    for _ in range(steps):
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return optimizer.param_groups[0]["lr"]


@pytest.mark.parametrize("steps", [0, 1, 5, 9])
def test_lr_schedules_after_k_steps(steps):
    assert _lr_after("constant", steps, 10) == 0.1
    assert _lr_after("poly", steps, 10) == pytest.approx(0.1 * (1 - steps / 10) ** 0.9, rel=1e-9)


def test_lr_schedule_defaults_official_for_bao_poly_elsewhere():
    assert BaoConfig.model_fields["lr_schedule"].default == "constant"
    assert CamTrainConfig.model_fields["lr_schedule"].default == "poly"
    assert SegConfig.model_fields["lr_schedule"].default == "poly"
    assert PARAMS.bao.lr_schedule == "constant" and PARAMS.train_cam.lr_schedule == "poly"
    with pytest.raises(ValueError, match="lr_schedule"):
        create_scheduler(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0), 10, "cosine")


# --- epoch-0 foreground weight -------------------------------------------------------------------

def _three_pixel_case():
    """Teacher CAM [0, 1, 1] on a 1x3 map, one class present: targets [bg, fg, fg].
    Student AM logits: bg pixel [0, 0] (CE ln 2), fg pixels [0, ln 3] (CE ln 4/3) and [0, 0] (ln 2)."""
    teacher_cams = torch.tensor([[[[0.0, 1.0, 1.0]]]])
    labels = torch.tensor([[1.0]])
    am = torch.tensor([[[[0.0, 0.0, 0.0]], [[0.0, math.log(3.0), 0.0]]]])
    return {"am": am, "logits": torch.zeros(1, 1)}, teacher_cams, labels


@pytest.mark.parametrize(
    "mode,epoch,fg_factor",
    [("official", 0, 1.0), ("official", 1, 1.0), ("applied", 0, 0.5), ("applied", 1, 1.0)],
)
def test_epoch0_foreground_weight(mode, epoch, fg_factor):
    outputs, teacher_cams, labels = _three_pixel_case()
    cfg = bao_cfg(eps=0.0, lambda_=1.0, loss="balanced", fg_weight_first_epoch=0.5, fg_weight_mode=mode)
    expected = 0.5 * (math.log(2) + fg_factor * (math.log(4 / 3) + math.log(2)) / 2)
    loss = bao_losses(outputs, teacher_cams, labels, cfg, epoch=epoch)["loss_bal"]
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_official_mode_equals_the_official_weighted_mean():
    """The official formula: sum(ce * w * fg) / sum(w * fg); the weight cancels."""
    outputs, teacher_cams, labels = _three_pixel_case()
    ce = torch.tensor([math.log(2), math.log(4 / 3), math.log(2)])
    fg = torch.tensor([0.0, 1.0, 1.0]) * 0.5
    official = 0.5 * (ce[0] + (ce * fg).sum() / fg.sum())
    loss = bao_losses(outputs, teacher_cams, labels, bao_cfg(eps=0.0, fg_weight_mode="official"), epoch=0)["loss_bal"]
    assert float(loss) == pytest.approx(float(official), rel=1e-6)


# --- teacher mode -------------------------------------------------------------------------------

class BatchNormBackbone(nn.Module):
    """Features = BatchNorm of the image's first channel: batch and running statistics differ."""

    has_attention = False
    normalization = IMAGENET
    out_channels = 1

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.bn(images[:, :1])


def _bn_student() -> BaoNet:
    cam_net = CamNet(BatchNormBackbone(), num_classes=1)
    nn.init.ones_(cam_net.classifier.weight)  # CAM = feature
    return BaoNet(cam_net)


def test_teacher_mode_train_makes_targets_with_batch_statistics():
    images = torch.tensor([1.0, 3.0]).view(2, 1, 1, 1).expand(2, 3, 1, 1).contiguous()
    student = _bn_student()  # running mean 0, var 1
    train_teacher, _ = make_teacher(student, bao_cfg(teacher_mode="train"), iters_per_epoch=4)
    eval_teacher, _ = make_teacher(student, bao_cfg(teacher_mode="eval"), iters_per_epoch=4)
    with torch.no_grad():
        # batch mean 2, biased var 1 -> (x - 2) / 1; running stats (0, 1) -> x unchanged (eps 1e-5 aside)
        assert train_teacher(images)["cams"].flatten().tolist() == pytest.approx([-1.0, 1.0], rel=1e-4)
        assert eval_teacher(images)["cams"].flatten().tolist() == pytest.approx([1.0, 3.0], rel=1e-4)
    assert train_teacher.training and not eval_teacher.training
    assert not any(p.requires_grad for p in train_teacher.parameters())


@pytest.mark.parametrize("mode,copies_buffers", [("train", False), ("eval", True)])
def test_teacher_ema_covers_buffers_only_in_eval_mode(mode, copies_buffers):
    student = _bn_student()
    teacher, hooks = make_teacher(student, bao_cfg(teacher_mode=mode, ema_start=0.75, ema_end=0.75), iters_per_epoch=4)
    hook = hooks[0]
    assert isinstance(hook, TeacherHook) and isinstance(hook.schedule, TeacherSchedule)
    with torch.no_grad():
        student.cam_net.backbone.bn.weight.fill_(5.0)  # teacher's is 1
        student.cam_net.backbone.bn.running_mean.fill_(7.0)  # teacher's is 0
    hook.after_step(LoopState(epoch=1, step_in_epoch=0, iters_per_epoch=4), {})
    bn = teacher.backbone.bn
    assert float(bn.weight) == pytest.approx(0.75 * 1.0 + 0.25 * 5.0)  # EMA of parameters, both modes
    assert float(bn.running_mean) == (7.0 if copies_buffers else 0.0)
    # epoch 0 copies the whole state in both modes (the official code loads the student's state dict)
    hook.after_step(LoopState(epoch=0, step_in_epoch=0, iters_per_epoch=4), {})
    assert float(bn.weight) == 5.0 and float(bn.running_mean) == 7.0


# --- CAM head of the Conformer family (TransCAM) --------------------------------------------------

def test_conformer_cam_head_has_the_transcam_shape():
    state = create_conformer("conformer_test", 20).state_dict()
    assert tuple(state["conv_cls_head.weight"].shape) == (21, 64, 3, 3)
    assert tuple(state["conv_cls_head.bias"].shape) == (21,)
    assert tuple(state["trans_cls_head.weight"].shape) == (21, 32)


def test_transcam_checkpoint_loads_completely_without_warning(tmp_path, caplog):
    torch.manual_seed(0)
    saved = create_conformer("conformer_test", 3).state_dict()
    saved["conv_cls_head.weight"] = torch.randn(4, 64, 3, 3)  # TransCAM's head: K+1 outputs, 3x3, bias
    saved["conv_cls_head.bias"] = torch.randn(4)
    torch.save(saved, tmp_path / "transcam.pth")
    config = CONFORMER_TEST.model_copy(update={"checkpoint": str(tmp_path / "transcam.pth")})
    from bao.models import create_cam_net

    with caplog.at_level(logging.INFO, logger="bao"):
        net = create_cam_net(config, 3)
    assert not [r for r in caplog.records if "not loaded" in r.getMessage() or r.levelno >= logging.WARNING]
    loaded = net.backbone.state_dict()
    for key, value in saved.items():
        assert torch.equal(loaded[key], value), key


def test_imagenet_heads_skipped_with_a_warning_that_names_them(tmp_path, caplog):
    saved = create_conformer("conformer_test", 3).state_dict()
    saved["conv_cls_head.weight"], saved["conv_cls_head.bias"] = torch.zeros(1000, 64), torch.zeros(1000)
    saved["trans_cls_head.weight"], saved["trans_cls_head.bias"] = torch.zeros(1000, 32), torch.zeros(1000)
    torch.save(saved, tmp_path / "imagenet.pth")
    from bao.models import create_cam_net

    with caplog.at_level(logging.WARNING, logger="bao"):
        create_cam_net(CONFORMER_TEST.model_copy(update={"checkpoint": str(tmp_path / "imagenet.pth")}), 3)
    warnings = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "conv_cls_head.weight" in warnings and "trans_cls_head.bias" in warnings


def test_refined_cams_include_the_bias_times_the_attention_row_sums():
    torch.manual_seed(0)
    from bao.models import create_cam_net

    net = create_cam_net(CONFORMER_TEST, 3).eval()
    bias = torch.tensor([9.0, 1.0, 2.0, 3.0])  # output 0 is the unused background slot
    with torch.no_grad():
        net.backbone.conv_cls_head.weight.zero_()
        net.backbone.conv_cls_head.bias.copy_(bias)
        outputs = net(torch.randn(2, 3, 32, 48), refine=True)
        plain = net(torch.randn(2, 3, 32, 48))
    row_sums = outputs["attention"].sum(dim=-1).view(2, 1, 2, 3)
    assert torch.allclose(outputs["cams"], bias[1:].view(1, 3, 1, 1) * row_sums, rtol=1e-5)
    assert torch.allclose(plain["cams"], bias[1:].view(1, 3, 1, 1).expand(2, 3, 2, 3))


# --- official BAO checkpoints -------------------------------------------------------------------

def official_bao_state(num_classes: int = 3) -> dict[str, torch.Tensor]:
    """A state dict in the official BAO network's layout (one Conformer module + label_enc + classifier_x),
    for conformer_test: D = 64 CNN channels, E = 32 token channels."""
    torch.manual_seed(1)
    state = {key: torch.randn_like(value.float()).to(value.dtype) if value.is_floating_point() else value
             for key, value in create_conformer("conformer_test", num_classes).state_dict().items()}
    state |= {
        "conv_cls_head.weight": torch.randn(num_classes + 1, 64, 3, 3), "conv_cls_head.bias": torch.randn(num_classes + 1),
        "trans_cls_head.weight": torch.randn(num_classes + 1, 32), "trans_cls_head.bias": torch.randn(num_classes + 1),
        "label_enc.weight": torch.randn(64, num_classes), "label_enc.bias": torch.randn(64),
        "classifier_x.weight": torch.randn(num_classes + 1, 64, 3, 3), "classifier_x.bias": torch.randn(num_classes + 1),
    }
    return state


def test_official_bao_checkpoint_loads_strictly_into_our_network(tmp_path):
    official = official_bao_state()
    torch.save(official, tmp_path / "bao_official.pth")
    net = create_bao_net(CONFORMER_TEST, 3)
    assert load_bao_weights(net, tmp_path / "bao_official.pth") == "official"
    ours = net.state_dict()
    assert torch.equal(ours["label_encoder.weight"], official["label_enc.weight"])
    assert torch.equal(ours["am_head.bias"], official["classifier_x.bias"])
    assert torch.equal(ours["cam_net.backbone.conv_cls_head.weight"], official["conv_cls_head.weight"])
    assert torch.equal(ours["cam_net.backbone.trans_1.attn.qkv.weight"], official["trans_1.attn.qkv.weight"])
    assert len(ours) == len(official)


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda s: s.pop("classifier_x.weight"), "missing keys .*am_head.weight"),
        (lambda s: s.__setitem__("med_block.0.weight", torch.zeros(1)), "unexpected keys .*med_block"),
        (lambda s: s.__setitem__("label_enc.weight", torch.zeros(64, 20)), "label_encoder.weight"),
    ],
)
def test_official_checkpoint_that_does_not_fit_is_refused(tmp_path, change, message):
    state = official_bao_state()
    change(state)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=message):
        load_bao_weights(create_bao_net(CONFORMER_TEST, 3), tmp_path / "bad.pth")


def test_official_checkpoint_needs_a_conformer(tmp_path):
    torch.save(official_bao_state(), tmp_path / "bao.pth")
    cnn = PARAMS.model.model_copy(update={"backbone": "test_resnet", "pretrained": False})
    with pytest.raises(CheckpointError, match="conformer"):
        load_bao_weights(create_bao_net(cnn, 3), tmp_path / "bao.pth")
    with pytest.raises(FileNotFoundError, match="bao.checkpoint"):
        load_bao_weights(create_bao_net(cnn, 3), tmp_path / "missing.pth")


def test_our_own_bao_checkpoint_loads_too(tmp_path):
    source = create_bao_net(CONFORMER_TEST, 3)
    torch.save({"model": source.state_dict()}, tmp_path / "bao.pt")
    target = create_bao_net(CONFORMER_TEST, 3)
    assert load_bao_weights(target, tmp_path / "bao.pt") == "ours"
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


# --- BAO head init ------------------------------------------------------------------------------

def test_bao_head_init_official_and_pytorch():
    torch.manual_seed(0)
    cnn = PARAMS.model.model_copy(update={"backbone": "test_resnet", "pretrained": False})
    net = create_bao_net(cnn, 20, head_init="official").requires_grad_(False)
    encoder, head = net.label_encoder, net.am_head
    assert float(encoder.weight.std()) == pytest.approx(0.02, rel=0.1)
    assert float(encoder.weight.abs().max()) <= 2.0 and not encoder.bias.any()
    fan_out = head.out_channels * 9  # Kaiming normal, fan_out, ReLU gain: std sqrt(2 / fan_out)
    assert float(head.weight.std()) == pytest.approx(math.sqrt(2 / fan_out), rel=0.1)
    default = create_bao_net(cnn, 20, head_init="pytorch").requires_grad_(False).label_encoder
    bound = 1 / math.sqrt(20)  # PyTorch's Linear: uniform(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert float(default.weight.abs().max()) <= bound and float(default.weight.std()) > 5 * 0.02
    with pytest.raises(ValueError, match="head_init"):
        BaoNet(net.cam_net, head_init="xavier")


def test_train_bao_with_a_checkpoint_loads_and_says_so(tmp_path, caplog):
    from types import SimpleNamespace

    from bao.train.bao import train_bao_net

    official = official_bao_state()
    torch.save(official, tmp_path / "bao_official.pth")
    live = RecordingLive()
    cfg = bao_cfg(checkpoint=str(tmp_path / "bao_official.pth"))
    with caplog.at_level(logging.WARNING, logger="bao"):
        net, metrics = train_bao_net(SimpleNamespace(num_classes=3), CONFORMER_TEST, cfg, "no-cam.pt", device=torch.device("cpu"), seed=0, live=live)
    assert metrics == {"loaded_from_checkpoint": 1, "official_layout": 1}
    assert live.metrics == [("loaded_from_checkpoint", 1)]
    assert "NOT trained" in caplog.text
    assert torch.equal(net.am_head.weight, official["classifier_x.weight"])


def test_a_backbone_file_without_heads_warns_that_they_stay_fresh(tmp_path, caplog):
    from bao.models import create_cam_net

    saved = {k: v for k, v in create_conformer("conformer_test", 3).state_dict().items() if "cls_head" not in k}
    torch.save(saved, tmp_path / "backbone_only.pth")
    with caplog.at_level(logging.WARNING, logger="bao"):
        create_cam_net(CONFORMER_TEST.model_copy(update={"checkpoint": str(tmp_path / "backbone_only.pth")}), 3)
    assert "conv_cls_head.weight" in caplog.text and "fresh initialisation" in caplog.text
