"""Stage 4 work: the CAM threshold sweep (an oracle baseline) and BAO's threshold-free pseudo-labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Subset

from bao.config import CrfConfig, PseudoLabelConfig
from bao.data.datasets import ImageLabelDataset, load_image
from bao.data.manifest import Manifest
from bao.data.palette import read_mask, save_mask
from bao.data.transforms import eval_transform
from bao.infer.crf import refine_in_workers
from bao.infer.predict import iterate_multiscale
from bao.infer.pseudo import bao_scores, max_normalized_cams, scores_to_labels, threshold_pseudo_labels
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


def _score(matrix: ConfusionMatrix, dataset: ImageLabelDataset, index: int, prediction: np.ndarray) -> None:
    gt = _gt_mask(dataset, index)
    if gt is not None:
        matrix.update(gt, prediction)


def bao_pseudo_labels(
    bao_net: nn.Module, manifest: Manifest, cfg: PseudoLabelConfig, crf: CrfConfig, device: torch.device, out_dir: Path, gallery_size: int = 0
) -> tuple[dict, dict[int, dict]]:
    """Write one palette PNG per training image (CRF-refined when ``crf.enabled``).

    Returns metrics ``{"bao": ..., "bao_crf": ...}`` (None where no mask or no CRF) and, for the
    first ``gallery_size`` images, their BAO label, background score map and CRF label."""
    dataset, loader = _train_images(manifest, cfg)
    matrices = {"bao": ConfusionMatrix(manifest.num_classes + 1), "bao_crf": ConfusionMatrix(manifest.num_classes + 1)}
    gallery: dict[int, dict] = {}

    def jobs():
        for index, maps, labels, _ in iterate_multiscale(bao_net, loader, device, cfg.scales, cfg.flip, True, "BAO pseudo-labels"):
            scores = bao_scores(maps["background"][0], maps["cams"], labels)
            prediction = scores_to_labels(scores)
            _score(matrices["bao"], dataset, index, prediction)
            if len(gallery) < gallery_size:
                gallery[index] = {"bao": prediction, "background": scores[0].cpu().numpy()}
            present = (torch.nonzero(labels.cpu()).flatten() + 1).tolist()
            yield index, dataset.manifest.resolve(dataset.rows.at[index, "image_path"]), prediction, present

    results = refine_in_workers(jobs(), crf) if crf.enabled else ((job[0], job[2]) for job in jobs())
    for index, final in results:
        save_mask(out_dir / f"{dataset.image_id(index)}.png", final)
        if crf.enabled:
            _score(matrices["bao_crf"], dataset, index, final)
            if index in gallery:
                gallery[index]["bao_crf"] = final
    names = class_names_with_background(manifest)
    return {name: matrix.compute(names) if matrix.matrix.sum() else None for name, matrix in matrices.items()}, gallery


def baseline_labels(cam_net: nn.Module, manifest: Manifest, cfg: PseudoLabelConfig, device: torch.device, indices, threshold: float) -> dict[int, np.ndarray]:
    """The CAM baseline's pseudo-labels at one t for a few training images (for the gallery)."""
    dataset = ImageLabelDataset(manifest, "train", eval_transform())
    loader = make_loader(Subset(dataset, list(indices)), 1, False, cfg.num_workers, seed=0)
    labels_by_index = {}
    for index, maps, labels, _ in iterate_multiscale(cam_net, loader, device, cfg.scales, cfg.flip, False, "baseline gallery"):
        labels_by_index[index] = threshold_pseudo_labels(max_normalized_cams(maps["cams"], labels), [threshold])[0]
    return labels_by_index


def gallery_rows(
    cam_net: nn.Module, manifest: Manifest, cfg: PseudoLabelConfig, device: torch.device, bao: dict[int, dict], threshold: float
) -> list[dict]:
    """Everything a gallery row shows: image, ground truth, the baseline at ``threshold``, BAO's maps."""
    dataset = ImageLabelDataset(manifest, "train")
    baseline = baseline_labels(cam_net, manifest, cfg, device, bao, threshold)
    rows = []
    for index, maps in bao.items():
        image = load_image(manifest.resolve(dataset.rows.at[index, "image_path"]))
        rows.append({"image_id": dataset.image_id(index), "image": image, "gt": _gt_mask(dataset, index), "baseline": baseline[index], **maps})
    return rows
