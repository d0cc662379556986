"""Stage 2: multi-label CAM classifier from image-level labels."""

from __future__ import annotations

from pathlib import Path

import torch

from bao.config import CamTrainConfig, ModelConfig
from bao.data.datasets import ImageLabelDataset
from bao.data.manifest import Manifest
from bao.data.transforms import eval_transform, train_transform
from bao.infer.predict import predict_logits
from bao.losses import classification_loss
from bao.metrics import mean_average_precision
from bao.models import CamNet, create_cam_net
from bao.train.checkpoint import resume_hook, run_fingerprint
from bao.train.common import LiveHook, make_loader
from bao.train.engine import create_optimizer, create_scheduler, train_loop


def train_cam_net(
    manifest: Manifest, model_cfg: ModelConfig, cfg: CamTrainConfig, device: torch.device, seed: int, live,
    resume_dir: str | Path | None = None,
) -> tuple[CamNet, dict[str, float]]:
    """``resume_dir``: where the resume checkpoint lives (None: no checkpoints)."""
    dataset = ImageLabelDataset(manifest, "train", train_transform(cfg.crop_size, cfg.resize_long, cfg.color_jitter))
    loader = make_loader(dataset, cfg.batch_size, True, cfg.num_workers, seed, drop_last=True)
    model = create_cam_net(model_cfg, manifest.num_classes).to(device)
    optimizer = create_optimizer(model.parameters(), cfg.lr, cfg.weight_decay)
    scheduler = create_scheduler(optimizer, cfg.epochs * len(loader))

    def step(batch: dict, state) -> dict[str, torch.Tensor]:
        return {"loss_cls": classification_loss(model(batch["image"])["logits"], batch["labels"])}

    fingerprint = run_fingerprint([model_cfg, cfg], seed, manifest, [model_cfg.checkpoint])
    checkpoint = resume_hook(resume_dir, cfg.checkpoint_every, fingerprint)
    state = train_loop(step, model, loader, optimizer, scheduler, cfg.epochs, device, [LiveHook(live, optimizer)], "train_cam", checkpoint)
    val = ImageLabelDataset(manifest, "val", eval_transform())
    logits, labels = predict_logits(model, make_loader(val, 1, False, cfg.num_workers, seed), device)
    metrics = {"final_loss": state.history[-1]["loss"], "val_map": mean_average_precision(logits, labels)}
    return model, metrics
