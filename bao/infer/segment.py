"""Stage 6 work: predict a split with the segmentation net, then score predictions against masks."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from bao.config import RuntimeConfig
from bao.data.datasets import ImageLabelDataset
from bao.data.manifest import Manifest
from bao.data.palette import save_mask
from bao.data.transforms import eval_transform
from bao.distributed import is_main_process, shard
from bao.evaluate import evaluate_pairs
from bao.io import BoundedPool
from bao.infer.predict import labels_argmax, segment_logits, shard_dataset
from bao.models.fold import folded_for_inference
from bao.train.common import make_loader

log = logging.getLogger("bao")


def predict_split(
    model: nn.Module, manifest: Manifest, split: str, out_dir: Path, *, device: torch.device, num_workers: int, runtime: RuntimeConfig | None = None,
    long_side: int | None = None, given_labels_dir: Path | None = None,
) -> None:
    """One PNG per image of ``split``, segmented with its long side resized to ``long_side`` (None:
    its own size); under ``torchrun`` each process predicts its shard.

    ``given_labels_dir``: also the prediction with only background and the image's own labelled
    classes competing, which separates what the network segments from what it recognises."""
    runtime = runtime or RuntimeConfig()
    dataset = ImageLabelDataset(manifest, split, eval_transform(model.normalization))
    model.eval()
    loader = make_loader(shard_dataset(dataset), 1, shuffle=False, num_workers=num_workers, seed=0, runtime=runtime)
    runner = None if runtime.fold_batchnorm else model
    with BoundedPool(2) as pool:
        for batch in tqdm(loader, desc=f"predict {split}", dynamic_ncols=True, disable=not is_main_process()):
            name = f"{dataset.image_id(int(batch['index'][0]))}.png"
            image = batch["image"][0]
            if runner is None:  # BatchNorm folded into the convolutions, checked on the first image (bao.models.fold)
                runner = folded_for_inference(model, lambda net: segment_logits(net, image, device, False, long_side=long_side),
                                              channels_last=runtime.channels_last)
            logits = segment_logits(runner, image, device, runtime.amp, long_side=long_side, channels_last=runtime.channels_last)
            pool.submit(save_mask, out_dir / name, labels_argmax(logits))
            if given_labels_dir is not None:
                pool.submit(save_mask, given_labels_dir / name, labels_argmax(logits, batch["labels"][0]))
        pool.drain()


def score_predictions(manifest: Manifest, split: str, pred_dir: Path | None, workers: int | None = None) -> dict | None:
    """mIoU of ``pred_dir/<id>.png`` against the split's ground-truth masks, keyed by class name;
    None when the split has no mask, or only masks whose every pixel is ignored (255). ``pred_dir``
    None scores the masks themselves (the labels of ``train_seg.labels: masks``).

    Under ``torchrun`` every process scores its share of the images and the counts are summed, so
    no process waits at a collective while one scores them all; call it on every process."""
    rows = manifest.split(split)
    rows = rows[rows["mask_path"] != ""]
    if rows.empty:
        return None
    masks = [(row.image_id, manifest.resolve(row.mask_path)) for row in rows.itertuples()]
    pairs = [(mask, mask if pred_dir is None else Path(pred_dir) / f"{image_id}.png") for image_id, mask in masks]
    matrix = evaluate_pairs(shard(pairs), manifest.num_classes + 1, workers)
    matrix.all_reduce()
    if not matrix.counted:
        log.warning("%s: every ground-truth pixel of the %d masks is ignored (255); no mIoU", split, len(pairs))
        return None
    return matrix.compute(["background", *manifest.classes])


def evaluation_metrics(val: dict | None, pseudo: dict | None, val_given_labels: dict | None = None) -> dict:
    """The evaluate stage's numbers; null where a split has no ground truth, with flags saying so.

    ``val_given_labels``: the val scores with each image's labels given (background and those
    classes only): the gap to ``val_miou`` is recognition, the gap to the pseudo-labels segmentation."""
    return {
        "val_miou": val["miou"] if val else None,
        "val_miou_given_labels": val_given_labels["miou"] if val_given_labels else None,
        "val_pixel_accuracy": val["pixel_accuracy"] if val else None,
        "pseudo_label_miou": pseudo["miou"] if pseudo else None,
        "val_per_class_iou": val["per_class_iou"] if val else None,
        "val_ground_truth_available": val is not None,
        "train_ground_truth_available": pseudo is not None,
    }
