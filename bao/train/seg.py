"""Stage 5: DeepLabV3 trained on the pseudo-labels as if they were ground truth."""

from __future__ import annotations

from pathlib import Path

import torch

from bao.config import SegConfig
from bao.data.datasets import ImageLabelDataset
from bao.data.manifest import Manifest
from bao.data.transforms import train_transform
from bao.losses import segmentation_loss
from bao.models import create_deeplab
from bao.train.common import LiveHook, make_loader
from bao.train.engine import create_optimizer, create_scheduler, train_loop


def train_segmentation_net(
    manifest: Manifest, pseudo_label_dir: str | Path, cfg: SegConfig, device: torch.device, seed: int, live
) -> tuple[torch.nn.Module, dict[str, float]]:
    transform = train_transform(cfg.crop_size, cfg.resize_long, cfg.color_jitter)
    dataset = ImageLabelDataset(manifest, "train", transform, mask_source="dir", mask_dir=pseudo_label_dir)
    loader = make_loader(dataset, cfg.batch_size, True, cfg.num_workers, seed, drop_last=True)
    model = create_deeplab(cfg.backbone, manifest.num_classes + 1, cfg.pretrained, cfg.output_stride).to(device)
    optimizer = create_optimizer(model.parameters(), cfg.lr, cfg.weight_decay)
    scheduler = create_scheduler(optimizer, cfg.epochs * len(loader))

    def step(batch: dict, state) -> dict[str, torch.Tensor]:
        return {"loss_seg": segmentation_loss(model(batch["image"]), batch["mask"])}

    state = train_loop(step, model, loader, optimizer, scheduler, cfg.epochs, device, [LiveHook(live, optimizer)], "train_seg")
    return model, {"final_loss": state.history[-1]["loss"]}
