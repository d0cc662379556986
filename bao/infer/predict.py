"""Model-to-maps adapters and the per-image inference loops of the pseudo-label and evaluate stages."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from bao.distributed import get_world_size, is_main_process, shard
from bao.infer.align import GeometryFn
from bao.infer.multiscale import batched_multiscale_maps
from bao.models.fold import folded_for_inference
from bao.runtime import autocast


def shard_dataset(dataset: Dataset) -> Dataset:
    """This process's share of an inference dataset under ``torchrun`` (all of it otherwise);
    items keep their index in the full dataset."""
    if get_world_size() == 1:
        return dataset
    return Subset(dataset, shard(range(len(dataset))))


@torch.no_grad()
def predict_logits(model: nn.Module, loader: DataLoader, device: torch.device, amp: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Image-level logits and labels over a loader (for mAP)."""
    model.eval()
    all_logits, all_labels = [], []
    for batch in loader:
        with autocast(device, amp):
            all_logits.append(model(batch["image"].to(device))["logits"].float().cpu())
        all_labels.append(batch["labels"])
    return torch.cat(all_logits), torch.cat(all_labels)


def collate_full_size(items: list[dict]) -> dict:
    """Batch of full-size images of different sizes: a list of images, stacked labels and indices."""
    return {
        "image": [item["image"] for item in items],
        "labels": torch.stack([item["labels"] for item in items]),
        "index": torch.tensor([item["index"] for item in items]),
    }


def map_forward(model: nn.Module, device: torch.device, with_am: bool, amp: bool = True, *, channels_last: bool = False, normalize=None,
                fold_batchnorm: bool = True):
    """The maps multi-scale inference sums: CAMs, and BAO's background channel (AM channel 0),
    refined by attention where the model is built for it. uint8 inputs (the resized images) are
    normalised with ``normalize`` first. ``fold_batchnorm``: the first batch builds the copy of
    ``model`` with BatchNorm folded into its convolutions (``bao.models.fold``) that runs them all."""
    runner = None if fold_batchnorm else model

    def call(net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict:
        return net(images, labels, refine=True) if with_am else net(images, refine=True)

    def forward(images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        nonlocal runner
        if images.dtype == torch.uint8:
            if normalize is None:
                raise ValueError("map_forward: uint8 images need the model's input normalisation")
            images = normalize(images)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if runner is None:
            runner = folded_for_inference(model, lambda net: call(net, images, labels), channels_last=channels_last)
        with autocast(device, amp):
            outputs = call(runner, images, labels)
        maps = {"cams": outputs["cams"]}
        if with_am:
            maps["background"] = outputs["am"][:, :1]
            maps["am_classes"] = outputs["am"][:, 1:]  # the student's own class channels (diagnosis)
        return maps

    return forward


@torch.no_grad()
def iterate_multiscale(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    scales,
    *,
    flip: bool,
    with_am: bool,
    desc: str,
    amp: bool = True,
    channels_last: bool = False,
    align: str = "geometric",
    normalize=None,
    geometry: GeometryFn | None = None,
    fold_batchnorm: bool = True,
) -> Iterator[tuple[int, dict[str, torch.Tensor], torch.Tensor]]:
    """Yield (index, merged maps, labels) per image, on ``device``, from a loader that collates
    full-size images with ``collate_full_size``; each loader batch is one forward pass per scale.

    Images may be uint8 (resized as uint8, then ``normalize``d) or already normalised floats;
    ``align`` is how maps are drawn back on the image (``bao.infer.align``), with ``geometry``
    (default: the model's traced ``feature_geometry``)."""
    model.eval()
    forward = map_forward(model, device, with_am, amp, channels_last=channels_last, normalize=normalize, fold_batchnorm=fold_batchnorm)
    for batch in tqdm(loader, desc=desc, dynamic_ncols=True, disable=not is_main_process()):
        images = [image.to(device, non_blocking=True) for image in batch["image"]]
        labels = batch["labels"].to(device, non_blocking=True)
        for position, maps in enumerate(batched_multiscale_maps(forward, images, labels, scales, flip=flip, align=align, geometry=geometry or model.feature_geometry)):
            yield int(batch["index"][position]), maps, labels[position]


@torch.no_grad()
def segment_logits(model: nn.Module, image: torch.Tensor, device: torch.device, amp: bool = True, *, long_side: int | None = None,
                   channels_last: bool = False) -> torch.Tensor:
    """(K + 1, H, W) logits of ``image`` at its own size. ``long_side``: the image is first resized so
    its long side has that length (the scale the network learned at), and the logits are drawn back
    at full size."""
    size = tuple(image.shape[-2:])
    batch = image[None].to(device)
    if long_side is not None and long_side != max(size):
        scale = long_side / max(size)
        batch = F.interpolate(batch, size=(max(1, round(size[0] * scale)), max(1, round(size[1] * scale))), mode="bilinear", antialias=True, align_corners=False)
    if channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)
    with autocast(device, amp):
        logits = model(batch).float()
    if logits.shape[-2:] != size:
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    return logits[0]


def labels_argmax(logits: torch.Tensor, present: torch.Tensor | None = None) -> np.ndarray:
    """Class index per pixel; ``present`` (K image labels): only background and those classes compete."""
    if present is not None:
        allowed = torch.cat([torch.ones(1, dtype=torch.bool, device=present.device), present > 0]).to(logits.device)
        logits = logits.masked_fill(~allowed[:, None, None], float("-inf"))
    return logits.max(dim=0).indices.to(torch.uint8).cpu().numpy()

