"""Stage 4 work: the CAM threshold sweep (an oracle baseline) and BAO's threshold-free pseudo-labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from bao.config import PseudoLabelConfig
from bao.data.datasets import ImageLabelDataset
from bao.data.manifest import Manifest
from bao.data.palette import read_mask, save_mask
from bao.data.transforms import eval_transform
from bao.infer.predict import iterate_multiscale
from bao.infer.pseudo import bao_pseudo_label, max_normalized_cams, threshold_pseudo_labels
from bao.metrics import ConfusionMatrix
from bao.train.common import make_loader


def _train_images(manifest: Manifest, cfg: PseudoLabelConfig) -> tuple[ImageLabelDataset, torch.utils.data.DataLoader]:
    dataset = ImageLabelDataset(manifest, "train", eval_transform())
    return dataset, make_loader(dataset, 1, False, cfg.num_workers, seed=0)


def _gt_mask(dataset: ImageLabelDataset, index: int) -> np.ndarray | None:
    stored = dataset.rows.at[index, "mask_path"]
    return read_mask(dataset.manifest.resolve(stored)) if stored else None


def class_names_with_background(manifest: Manifest) -> list[str]:
    return ["background", *manifest.classes]


def threshold_sweep(cam_net: nn.Module, manifest: Manifest, cfg: PseudoLabelConfig, device: torch.device) -> dict:
    """mIoU of CAM pseudo-labels at each t; the best t is chosen with ground truth (an oracle).

    Without any training mask there is nothing to score: every mIoU is None and
    ``ground_truth_available`` is False (no inference is run for nothing)."""
    if not (manifest.split("train")["mask_path"] != "").any():
        curve = [{"threshold": round(t, 6), "miou": None} for t in cfg.thresholds]
        return {"ground_truth_available": False, "curve": curve, "best_threshold": None, "best": None}
    dataset, loader = _train_images(manifest, cfg)
    matrices = [ConfusionMatrix(manifest.num_classes + 1) for _ in cfg.thresholds]
    for index, maps, labels, _ in iterate_multiscale(cam_net, loader, device, cfg.scales, cfg.flip, False, "threshold sweep"):
        gt = _gt_mask(dataset, index)
        if gt is None:
            continue
        for matrix, prediction in zip(matrices, threshold_pseudo_labels(max_normalized_cams(maps["cams"], labels), cfg.thresholds)):
            matrix.update(gt, prediction)
    if not any(matrix.matrix.sum() for matrix in matrices):
        raise ValueError("threshold sweep: no training image has a ground-truth mask to evaluate against")
    names = class_names_with_background(manifest)
    results = [matrix.compute(names) for matrix in matrices]
    curve = [{"threshold": round(t, 6), "miou": r["miou"]} for t, r in zip(cfg.thresholds, results)]
    best = int(np.nanargmax([point["miou"] for point in curve]))
    return {"ground_truth_available": True, "curve": curve, "best_threshold": curve[best]["threshold"], "best": results[best]}


def bao_pseudo_labels(bao_net: nn.Module, manifest: Manifest, cfg: PseudoLabelConfig, device: torch.device, out_dir: Path) -> dict | None:
    """Write one palette PNG per training image; return their metrics where masks exist."""
    dataset, loader = _train_images(manifest, cfg)
    matrix = ConfusionMatrix(manifest.num_classes + 1)
    for index, maps, labels, _ in iterate_multiscale(bao_net, loader, device, cfg.scales, cfg.flip, True, "BAO pseudo-labels"):
        prediction = bao_pseudo_label(maps["background"][0], maps["cams"], labels)
        save_mask(out_dir / f"{dataset.image_id(index)}.png", prediction)
        gt = _gt_mask(dataset, index)
        if gt is not None:
            matrix.update(gt, prediction)
    return matrix.compute(class_names_with_background(manifest)) if matrix.matrix.sum() else None
