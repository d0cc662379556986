"""Stage 3: BAO's background-aware activation map, taught by an EMA teacher with no threshold."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from bao.config import BaoConfig, ModelConfig, RuntimeConfig
from bao.data.datasets import ImageLabelDataset
from bao.data.manifest import Manifest
from bao.data.transforms import train_transform
from bao.losses import balanced_soft_ce, classification_loss, smooth_targets, soft_ce, teacher_targets
from bao.models import BaoNet, create_bao_net
from bao.train.checkpoint import resume_hook, run_fingerprint
from bao.train.common import LiveHook, load_model_state, make_loader, prepare_model
from bao.train.ema import TeacherSchedule, copy_weights, ema_update
from bao.train.engine import Hook, LoopState, create_optimizer, create_scheduler, train_loop


class TeacherHook(Hook):
    """After each optimizer step: copy (epoch 0) or EMA-update the teacher from the student."""

    def __init__(self, teacher: torch.nn.Module, student: torch.nn.Module, schedule: TeacherSchedule):
        self.teacher, self.student, self.schedule = teacher, student, schedule

    def after_step(self, state: LoopState, losses: dict[str, float]) -> None:
        momentum = self.schedule.momentum(state.epoch, state.step_in_epoch)
        if momentum == 0.0:
            copy_weights(self.teacher, self.student)
        else:
            ema_update(self.teacher, self.student, momentum)

    def state_dict(self) -> dict:
        return {"teacher": self.teacher.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.teacher.load_state_dict(state["teacher"])


def bao_losses(outputs: dict, teacher_cams: torch.Tensor, labels: torch.Tensor, cfg: BaoConfig, epoch: int) -> dict[str, torch.Tensor]:
    """L_cls + lambda * L_bal, with targets from the teacher's CAMs (smoothed by eps; 0 = one-hot).

    ``bao.loss: ce`` swaps the balanced loss for plain soft CE over all pixels (an ablation; the
    first-epoch foreground weight belongs to the balanced loss and is not used then)."""
    hard = teacher_targets(teacher_cams, labels)
    soft = smooth_targets(hard, labels.shape[1] + 1, cfg.eps)
    if cfg.loss == "ce":
        map_loss = soft_ce(outputs["am"], soft)
    else:
        map_loss = balanced_soft_ce(outputs["am"], soft, hard, cfg.fg_weight_first_epoch if epoch == 0 else 1.0)
    return {"loss_cls": classification_loss(outputs["logits"], labels), "loss_bal": cfg.lambda_ * map_loss}


def make_teacher(student: BaoNet, cfg: BaoConfig, iters_per_epoch: int) -> tuple[torch.nn.Module, list[Hook]]:
    """A frozen copy of the student's CAM network, updated by a hook unless ``bao.teacher: none``
    (then it stays the trained CAM network: the no-EMA ablation)."""
    teacher = copy.deepcopy(student.cam_net).eval().requires_grad_(False)
    if cfg.teacher == "none":
        return teacher, []
    schedule = TeacherSchedule(cfg.ema_start, cfg.ema_end, cfg.ema_period or iters_per_epoch)
    return teacher, [TeacherHook(teacher, student.cam_net, schedule)]


def train_bao_net(
    manifest: Manifest,
    model_cfg: ModelConfig,
    cfg: BaoConfig,
    cam_checkpoint: str,
    device: torch.device,
    seed: int,
    live,
    resume_dir: str | Path | None = None,
    runtime: RuntimeConfig | None = None,
) -> tuple[BaoNet, dict[str, float]]:
    """``resume_dir``: where the resume checkpoint lives (None: no checkpoints)."""
    runtime = runtime or RuntimeConfig()
    dataset = ImageLabelDataset(manifest, "train", train_transform(cfg.crop_size, cfg.resize_long, cfg.color_jitter))
    loader = make_loader(dataset, cfg.batch_size, True, runtime.loader_workers, seed, drop_last=True, runtime=runtime, distributed=True)
    student = create_bao_net(model_cfg, manifest.num_classes, use_label_encoder=cfg.label_encoder)
    load_model_state(cam_checkpoint, student.cam_net, manifest.classes)
    net = prepare_model(student, device, runtime)
    teacher, teacher_hooks = make_teacher(student, cfg, len(loader))
    optimizer = create_optimizer(student.parameters(), cfg.lr, cfg.weight_decay)
    scheduler = create_scheduler(optimizer, cfg.epochs * len(loader))

    def step(batch: dict, state: LoopState) -> dict[str, torch.Tensor]:
        images, labels = batch["image"], batch["labels"]
        with torch.no_grad():
            teacher_cams = teacher(images, refine=True)["cams"]
        return bao_losses(net(images, labels, refine=True), teacher_cams, labels, cfg, state.epoch)

    hooks = [*teacher_hooks, LiveHook(live, optimizer)]
    fingerprint = run_fingerprint([model_cfg, cfg], seed, manifest, [cam_checkpoint, model_cfg.checkpoint])
    checkpoint = resume_hook(resume_dir, runtime.checkpoint_every, fingerprint)
    state = train_loop(
        step, student, loader, optimizer, scheduler, cfg.epochs, device, hooks, "train_bao", checkpoint, runtime.amp, runtime.channels_last
    )
    final = state.history[-1]
    return student, {"final_loss": final["loss"], "final_loss_cls": final["loss_cls"], "final_loss_bal": final["loss_bal"]}
