"""Stage 3: BAO's background-aware activation map, taught by an EMA teacher with no threshold."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch

from bao.config import BaoConfig, ModelConfig, RuntimeConfig
from bao.data.datasets import ImageLabelDataset
from bao.data.manifest import Manifest
from bao.data.transforms import train_transform
from bao.losses import balanced_soft_ce, classification_loss, smooth_targets, soft_ce, teacher_targets
from bao.models import BaoNet, create_bao_net
from bao.models.official import load_bao_weights
from bao.train.checkpoint import resume_hook, run_fingerprint
from bao.train.common import LiveHook, load_model_state, training_parts
from bao.train.ema import TeacherSchedule, copy_weights, ema_update
from bao.train.engine import Hook, LoopState, train_loop


log = logging.getLogger("bao")


class TeacherHook(Hook):
    """After each optimizer step: copy (epoch 0) or EMA-update the teacher from the student."""

    def __init__(self, teacher: torch.nn.Module, student: torch.nn.Module, schedule: TeacherSchedule, copy_buffers: bool = True):
        self.teacher, self.student, self.schedule = teacher, student, schedule
        self.copy_buffers = copy_buffers

    def after_step(self, state: LoopState, losses: dict[str, float]) -> None:
        momentum = self.schedule.momentum(state.epoch, state.step_in_epoch)
        if momentum == 0.0:
            copy_weights(self.teacher, self.student)  # the whole state, buffers too (as the official code)
        else:
            ema_update(self.teacher, self.student, momentum, copy_buffers=self.copy_buffers)

    def state_dict(self) -> dict:
        return {"teacher": self.teacher.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.teacher.load_state_dict(state["teacher"])


def bao_losses(outputs: dict, teacher_cams: torch.Tensor, labels: torch.Tensor, cfg: BaoConfig, *, epoch: int) -> dict[str, torch.Tensor]:
    """L_cls + lambda * L_bal, with targets from the teacher's CAMs (smoothed by eps; 0 = one-hot).

    ``bao.loss: ce`` swaps the balanced loss for plain soft CE over all pixels (an ablation; the
    first-epoch foreground weight belongs to the balanced loss and is not used then)."""
    hard = teacher_targets(teacher_cams, labels)
    soft = smooth_targets(hard, labels.shape[1] + 1, cfg.eps)
    if cfg.loss == "ce":
        map_loss = soft_ce(outputs["am"], soft)
    else:
        map_loss = balanced_soft_ce(outputs["am"], soft, hard, effective_fg_weight(cfg, epoch))
    return {"loss_cls": classification_loss(outputs["logits"], labels), "loss_bal": cfg.lambda_ * map_loss}


def effective_fg_weight(cfg: BaoConfig, epoch: int) -> float:
    """The factor on the foreground half of the balanced loss.

    The official code multiplies the foreground pixels' losses and their count by
    ``fg_weight_first_epoch`` in epoch 0, so the weight cancels: 1.0 (``fg_weight_mode: official``).
    ``applied`` scales the foreground half by it in epoch 0 (what the paper's text suggests)."""
    return cfg.fg_weight_first_epoch if cfg.fg_weight_mode == "applied" and epoch == 0 else 1.0


class TargetAgreement(Hook):
    """How often the student's own argmax over its K+1 channels is the teacher's target, over the
    cells of the latest epoch: near 1 the head has learnt its targets (or over-fitted them), far
    below it is under-trained. Free: both are at hand in every step."""

    def __init__(self):
        self.matches, self.cells, self.last_epoch = 0, 0, None

    def before_epoch(self, state: LoopState) -> None:
        self.matches, self.cells = 0, 0

    def add(self, am: torch.Tensor, targets: torch.Tensor) -> None:
        self.matches += int((am.detach().max(dim=1).indices == targets).sum())
        self.cells += targets.numel()

    def after_epoch(self, state: LoopState, epoch_losses: dict[str, float]) -> None:
        self.last_epoch = self.matches / self.cells if self.cells else None


def bao_param_groups(student: BaoNet, cfg: BaoConfig) -> list[dict] | None:
    """AdamW's groups: the new head at ``bao.lr``, the trained CAM network at ``bao.cam_lr``.

    None (``cam_lr: null``, official): one lr for every parameter. 0: the CAM network is frozen
    (BN included) and left out of the optimizer."""
    if cfg.cam_lr is None:
        return None
    head = [param for name, param in student.named_parameters() if not name.startswith("cam_net.")]
    if cfg.cam_lr == 0:
        student.freeze_cam_net()
        return [{"params": head, "lr": cfg.lr}]
    return [{"params": head, "lr": cfg.lr}, {"params": list(student.cam_net.parameters()), "lr": cfg.cam_lr}]


def make_teacher(student: BaoNet, cfg: BaoConfig, iters_per_epoch: int) -> tuple[torch.nn.Module, list[Hook]]:
    """A gradient-free copy of the student's CAM network, updated by a hook unless ``bao.teacher:
    none`` (then it stays the trained CAM network: the no-EMA ablation).

    ``bao.teacher_mode: train`` (official) keeps it in train mode for good (BN on batch statistics,
    DropPath active when it makes targets; its EMA covers parameters only); ``eval`` puts it in
    eval mode and copies the student's BN buffers with every EMA step."""
    teacher = copy.deepcopy(student.cam_net).train(cfg.teacher_mode == "train").requires_grad_(False)
    if cfg.teacher == "none":
        return teacher, []
    schedule = TeacherSchedule(cfg.ema_start, cfg.ema_end, cfg.ema_period or iters_per_epoch)
    return teacher, [TeacherHook(teacher, student.cam_net, schedule, copy_buffers=cfg.teacher_mode == "eval")]


def loaded_bao_metrics(student: BaoNet, checkpoint: str, live) -> dict[str, float]:
    """Load trained BAO weights instead of training; logged so that no one mistakes them for a run."""
    layout = load_bao_weights(student, checkpoint)
    log.warning("train_bao: NOT trained; BAO weights loaded from %s (%s layout) as bao.checkpoint asks", checkpoint, layout)
    live.log_metric("loaded_from_checkpoint", 1)
    live.next_step()
    return {"loaded_from_checkpoint": 1, "official_layout": int(layout == "official")}


def train_bao_net(
    manifest: Manifest,
    model_cfg: ModelConfig,
    cfg: BaoConfig,
    cam_checkpoint: str,
    *,
    device: torch.device,
    seed: int,
    live,
    resume_dir: str | Path | None = None,
    runtime: RuntimeConfig | None = None,
) -> tuple[BaoNet, dict[str, float]]:
    """``resume_dir``: where the resume checkpoint lives (None: no checkpoints).

    With ``bao.checkpoint`` set nothing is trained: those weights (the official release's layout or
    ours) are loaded and returned, and the metrics say so (``loaded_from_checkpoint: 1``, no loss)."""
    runtime = runtime or RuntimeConfig()
    student = create_bao_net(model_cfg, manifest.num_classes, use_label_encoder=cfg.label_encoder, head_init=cfg.head_init)
    if cfg.checkpoint:
        return student, loaded_bao_metrics(student, cfg.checkpoint, live)
    transform = train_transform(cfg.crop_size, cfg.resize_long, cfg.color_jitter, normalization=student.normalization)
    dataset = ImageLabelDataset(manifest, "train", transform)
    load_model_state(cam_checkpoint, student.cam_net, manifest.classes)
    param_groups = bao_param_groups(student, cfg)
    loader, net, optimizer, scheduler = training_parts(student, dataset, cfg, seed=seed, device=device, runtime=runtime, param_groups=param_groups)
    # a frozen CAM network is its own teacher: its CAMs come from the student's forward pass, once
    teacher, teacher_hooks = (None, []) if student.cam_frozen else make_teacher(student, cfg, len(loader))
    agreement = TargetAgreement()

    def step(batch: dict, state: LoopState) -> dict[str, torch.Tensor]:
        images, labels = batch["image"], batch["labels"]
        outputs = net(images, labels, refine=True)
        if teacher is None:
            teacher_cams = outputs["cams"].detach()
        else:
            with torch.no_grad():
                teacher_cams = teacher(images, refine=True)["cams"]
        agreement.add(outputs["am"], teacher_targets(teacher_cams, labels))
        return bao_losses(outputs, teacher_cams, labels, cfg, epoch=state.epoch)

    hooks = [*teacher_hooks, agreement, LiveHook(live, optimizer)]
    fingerprint = run_fingerprint([model_cfg, cfg], seed, manifest, [cam_checkpoint, model_cfg.checkpoint])
    checkpoint = resume_hook(resume_dir, runtime.checkpoint_every, fingerprint)
    state = train_loop(
        step, student, loader, optimizer, scheduler=scheduler, epochs=cfg.epochs, device=device, hooks=hooks, description="train_bao",
        checkpoint=checkpoint, amp=runtime.amp, channels_last=runtime.channels_last,
    )
    final = state.history[-1]
    return student, {
        "final_loss": final["loss"], "final_loss_cls": final["loss_cls"], "final_loss_bal": final["loss_bal"],
        "final_teacher_agreement": agreement.last_epoch,
    }
