"""Stage 5: DeepLabV3 trained on the pseudo-labels as if they were ground truth."""

from __future__ import annotations

from pathlib import Path

import torch

from bao.config import RuntimeConfig, SegConfig
from bao.data.datasets import ImageLabelDataset
from bao.data.manifest import Manifest
from bao.data.transforms import train_transform
from bao.losses import segmentation_loss
from bao.models import create_deeplab
from bao.models.deeplab import DeepLabV3
from bao.train.checkpoint import resume_hook, run_fingerprint
from bao.train.common import LiveHook, training_parts
from bao.train.engine import train_loop


def training_labels_dir(cfg: SegConfig, *, bao: str | Path, threshold: str | Path) -> str | Path:
    """The pseudo-label directory ``train_seg.labels`` names: BAO's, or the CAM labels at ``train_seg.threshold``."""
    return {"bao": bao, "threshold": threshold}[cfg.labels]


def seg_param_groups(model: DeepLabV3, cfg: SegConfig) -> list[dict] | None:
    """AdamW's groups: the new head at ``train_seg.lr``, the pretrained encoder at ``train_seg.backbone_lr``
    (None when that is null: one lr for every parameter)."""
    if cfg.backbone_lr is None:
        return None
    return [{"params": list(model.head.parameters()), "lr": cfg.lr}, {"params": list(model.backbone.parameters()), "lr": cfg.backbone_lr}]


def train_segmentation_net(
    manifest: Manifest,
    pseudo_label_dir: str | Path,
    cfg: SegConfig,
    *,
    device: torch.device,
    seed: int,
    live,
    resume_dir: str | Path | None = None,
    runtime: RuntimeConfig | None = None,
) -> tuple[torch.nn.Module, dict[str, float]]:
    """``resume_dir``: where the resume checkpoint lives (None: no checkpoints)."""
    runtime = runtime or RuntimeConfig()
    model = create_deeplab(cfg.backbone, manifest.num_classes + 1, cfg.pretrained, cfg.output_stride)
    transform = train_transform(cfg.crop_size, cfg.resize_long, cfg.color_jitter, normalization=model.normalization)
    dataset = ImageLabelDataset(manifest, "train", transform, mask_source="dir", mask_dir=pseudo_label_dir)
    loader, net, optimizer, scheduler = training_parts(model, dataset, cfg, seed=seed, device=device, runtime=runtime, param_groups=seg_param_groups(model, cfg))

    def step(batch: dict, state) -> dict[str, torch.Tensor]:
        return {"loss_seg": segmentation_loss(net(batch["image"]), batch["mask"])}

    checkpoint = resume_hook(resume_dir, runtime.checkpoint_every, run_fingerprint([cfg], seed, manifest, [pseudo_label_dir]))
    hooks = [LiveHook(live, optimizer)]
    state = train_loop(
        step, model, loader, optimizer, scheduler=scheduler, epochs=cfg.epochs, device=device, hooks=hooks, description="train_seg",
        checkpoint=checkpoint, amp=runtime.amp, channels_last=runtime.channels_last,
    )
    return model, {"final_loss": state.history[-1]["loss"]}
