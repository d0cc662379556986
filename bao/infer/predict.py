"""Model-to-maps adapters and the per-image inference loops of the pseudo-label and evaluate stages."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from bao.infer.multiscale import multiscale_maps
from bao.runtime import autocast


@torch.no_grad()
def predict_logits(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Image-level logits and labels over a loader (for mAP)."""
    model.eval()
    all_logits, all_labels = [], []
    for batch in loader:
        with autocast(device):
            all_logits.append(model(batch["image"].to(device))["logits"].float().cpu())
        all_labels.append(batch["labels"])
    return torch.cat(all_logits), torch.cat(all_labels)


@torch.no_grad()
def iterate_multiscale(
    model: nn.Module, loader: DataLoader, device: torch.device, scales, flip: bool, with_am: bool, desc: str
) -> Iterator[tuple[int, dict[str, torch.Tensor], torch.Tensor, dict]]:
    """Yield (index, merged maps, labels, item) per image; a loader of batch size 1 and full-size images."""
    model.eval()
    for batch in tqdm(loader, desc=desc, dynamic_ncols=True):
        image, labels = batch["image"][0].to(device), batch["labels"][0].to(device)

        def forward(images: torch.Tensor) -> dict[str, torch.Tensor]:
            repeated = labels[None].expand(images.shape[0], -1)
            with autocast(device):
                outputs = model(images, repeated, refine=True) if with_am else model(images, refine=True)
            maps = {"cams": outputs["cams"]}
            if with_am:
                maps["background"] = outputs["am"][:, :1]
            return maps

        yield int(batch["index"][0]), multiscale_maps(forward, image, scales, flip), labels, batch


@torch.no_grad()
def predict_segmentation(model: nn.Module, image: torch.Tensor, device: torch.device) -> np.ndarray:
    with autocast(device):
        logits = model(image[None].to(device))
    return logits[0].argmax(dim=0).to(torch.uint8).cpu().numpy()
