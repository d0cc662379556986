"""Torch datasets over the manifest: images with image-level labels, optionally with a mask."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from bao.data.manifest import Manifest
from bao.data.palette import read_mask


def load_image(path: str | Path) -> np.ndarray:
    """RGB uint8 (H, W, 3); grey and alpha images are converted."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise OSError(f"{path}: unreadable or corrupt image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class ImageLabelDataset(Dataset):
    """Items: dict(image, labels, index[, mask]); masks come from ``mask_dir`` (pseudo-labels) or the manifest."""

    def __init__(
        self,
        manifest: Manifest,
        split: str,
        transform=None,
        *,
        mask_source: str | None = None,
        mask_dir: str | Path | None = None,
    ):
        if mask_source not in (None, "manifest", "dir"):
            raise ValueError(f"mask_source must be None, 'manifest' or 'dir', got {mask_source!r}")
        self.manifest = manifest
        self.rows: pd.DataFrame = manifest.split(split)
        if mask_source == "manifest" and (self.rows["mask_path"] == "").any():
            self.rows = self.rows[self.rows["mask_path"] != ""].reset_index(drop=True)
        self.labels = torch.from_numpy(manifest.label_matrix(self.rows))
        self.transform = transform
        self.mask_source = mask_source
        self.mask_dir = Path(mask_dir) if mask_dir is not None else None

    def __len__(self) -> int:
        return len(self.rows)

    def image_id(self, index: int) -> str:
        return self.rows.at[index, "image_id"]

    def mask_path(self, index: int) -> Path:
        if self.mask_source == "dir":
            return self.mask_dir / f"{self.image_id(index)}.png"
        return self.manifest.resolve(self.rows.at[index, "mask_path"])

    def __getitem__(self, index: int) -> dict:
        image = tv_tensors.Image(torch.from_numpy(load_image(self.manifest.resolve(self.rows.at[index, "image_path"]))).permute(2, 0, 1))
        sample = {"image": image}
        if self.mask_source is not None:
            sample["mask"] = tv_tensors.Mask(torch.from_numpy(read_mask(self.mask_path(index))))
        if self.transform is not None:
            sample = self.transform(sample)
        item = {"image": sample["image"].as_subclass(torch.Tensor), "labels": self.labels[index], "index": index}
        if "mask" in sample:
            item["mask"] = sample["mask"].as_subclass(torch.Tensor).long()
        return item
