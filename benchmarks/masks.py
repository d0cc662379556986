"""Synthetic VOC-like mask pairs for the evaluator benchmark: blobby objects, a 255 border band."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from bao.data.palette import IGNORE_INDEX, save_mask


def blob_mask(rng: np.random.Generator, height: int, width: int, num_classes: int) -> np.ndarray:
    """Background plus 1-4 objects, each a union of filled ellipses, with a 255 band on every border."""
    mask = np.zeros((height, width), np.uint8)
    for class_index in rng.choice(np.arange(1, num_classes), size=rng.integers(1, 5), replace=False):
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        for _ in range(int(rng.integers(1, 4))):
            center = (cx + int(rng.integers(-60, 61)), cy + int(rng.integers(-60, 61)))
            axes = (int(rng.integers(15, 110)), int(rng.integers(15, 110)))
            cv2.ellipse(mask, center, axes, float(rng.uniform(0, 180)), 0, 360, int(class_index), -1)
    kernel = np.ones((5, 5), np.uint8)
    border = cv2.dilate(mask, kernel) != cv2.erode(mask, kernel)
    mask[border] = IGNORE_INDEX
    return mask


def predicted_mask(rng: np.random.Generator, gt: np.ndarray, num_classes: int) -> np.ndarray:
    """A plausible prediction: the ground truth shifted and eroded/dilated, one object confused, a false blob."""
    pred = np.where(gt == IGNORE_INDEX, 0, gt).astype(np.uint8)
    pred = np.roll(pred, (int(rng.integers(-8, 9)), int(rng.integers(-8, 9))), axis=(0, 1))
    kernel = np.ones((int(rng.integers(3, 12)),) * 2, np.uint8)
    pred = cv2.dilate(pred, kernel) if rng.random() < 0.5 else cv2.erode(pred, kernel)
    present = [c for c in np.unique(pred) if c != 0]
    if present and rng.random() < 0.3:
        pred[pred == rng.choice(present)] = int(rng.integers(1, num_classes))
    center = (int(rng.integers(0, gt.shape[1])), int(rng.integers(0, gt.shape[0])))
    cv2.circle(pred, center, int(rng.integers(5, 40)), int(rng.integers(0, num_classes)), -1)
    return pred


def write_mask_pairs(root: Path, count: int, num_classes: int = 21, *, size: tuple[int, int] = (375, 500), seed: int = 0) -> tuple[Path, Path]:
    """``root/gt`` and ``root/pred`` with ``count`` palette PNGs each; returns the two directories."""
    rng = np.random.default_rng(seed)
    gt_dir, pred_dir = root / "gt", root / "pred"
    gt_dir.mkdir(parents=True, exist_ok=True)
    pred_dir.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        gt = blob_mask(rng, *size, num_classes)
        save_mask(gt_dir / f"{index:06d}.png", gt)
        save_mask(pred_dir / f"{index:06d}.png", predicted_mask(rng, gt, num_classes))
    return gt_dir, pred_dir
