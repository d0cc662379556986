"""Stage 2: multi-label CAM classifier from image-level labels."""

from __future__ import annotations

from pathlib import Path

import torch

from bao.config import CamTrainConfig, ModelConfig, RuntimeConfig
from bao.distributed import gather_tensors
from bao.data.datasets import ImageLabelDataset
from bao.data.manifest import Manifest
from bao.data.transforms import eval_transform, train_transform
from bao.infer.predict import predict_logits, shard_dataset
from bao.losses import classification_loss
from bao.metrics import mean_average_precision
from bao.models import CamNet, create_cam_net
from bao.train.checkpoint import resume_hook, run_fingerprint
from bao.train.common import LiveHook, backbone_lr_groups, make_loader, training_parts
from bao.train.engine import train_loop


def train_cam_net(
    manifest: Manifest,
    model_cfg: ModelConfig,
    cfg: CamTrainConfig,
    *,
    device: torch.device,
    seed: int,
    live,
    resume_dir: str | Path | None = None,
    runtime: RuntimeConfig | None = None,
) -> tuple[CamNet, dict[str, float]]:
    """``resume_dir``: where the resume checkpoint lives (None: no checkpoints)."""
    runtime = runtime or RuntimeConfig()
    model = create_cam_net(model_cfg, manifest.num_classes)
    transform = train_transform(cfg.crop_size, cfg.resize_long, cfg.color_jitter, normalization=model.normalization)
    dataset = ImageLabelDataset(manifest, "train", transform)
    param_groups = backbone_lr_groups(model, lr=cfg.lr, backbone_lr=cfg.backbone_lr, key="train_cam.backbone_lr")
    loader, net, optimizer, scheduler = training_parts(model, dataset, cfg, seed=seed, device=device, runtime=runtime, param_groups=param_groups)

    def step(batch: dict, state) -> dict[str, torch.Tensor]:
        return {"loss_cls": classification_loss(net(batch["image"])["logits"], batch["labels"])}

    fingerprint = run_fingerprint([model_cfg, cfg], seed, manifest, [model_cfg.checkpoint])
    checkpoint = resume_hook(resume_dir, runtime.checkpoint_every, fingerprint)
    hooks = [LiveHook(live, optimizer)]
    state = train_loop(
        step, model, loader, optimizer, scheduler=scheduler, epochs=cfg.epochs, device=device, hooks=hooks, description="train_cam",
        checkpoint=checkpoint, amp=runtime.amp, channels_last=runtime.channels_last,
    )
    logits, labels = validation_logits(model, manifest, num_workers=runtime.loader_workers, device=device, runtime=runtime)
    metrics = {"final_loss": state.history[-1]["loss"], "val_map": mean_average_precision(logits, labels)}
    return model, metrics


def validation_logits(model: CamNet, manifest: Manifest, *, num_workers: int, device: torch.device, runtime: RuntimeConfig):
    """Val logits and labels; under ``torchrun`` each process scores its shard and all are gathered."""
    val = shard_dataset(ImageLabelDataset(manifest, "val", eval_transform(model.normalization)))
    logits, labels = predict_logits(model, make_loader(val, 1, shuffle=False, num_workers=num_workers, seed=0, runtime=runtime), device, runtime.amp)
    return torch.cat(gather_tensors(logits)), torch.cat(gather_tensors(labels))
