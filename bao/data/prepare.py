"""Build the manifest for the configured dataset; validate it whole before writing anything."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bao.config import DataConfig
from bao.data.manifest import write_manifest
from bao.data.validate import DatasetError, validate_table
from bao.data.voc import VOC_CLASSES, read_voc
from bao.io import atomic_dir

SYNTHETIC_DIR = "synthetic"


def _read_source(cfg: DataConfig, root: Path, base: Path, problems: list[str]) -> tuple[pd.DataFrame, tuple[str, ...]]:
    splits = {"train": cfg.train_split, "val": cfg.val_split}
    if cfg.dataset in ("synthetic", "voc"):
        from bao.data.synthetic import SYNTHETIC_CLASSES

        classes = SYNTHETIC_CLASSES[: cfg.synthetic.num_classes] if cfg.dataset == "synthetic" else VOC_CLASSES
        return read_voc(root, splits, tuple(classes), base, problems), tuple(classes)
    raise NotImplementedError(f"data.dataset={cfg.dataset!r} is not supported yet")


def prepare_dataset(cfg: DataConfig, seed: int, out_dir: str | Path) -> dict:
    """Write ``out_dir`` (manifest, classes, and for ``synthetic`` the generated images) atomically."""
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as staging:
        if cfg.dataset == "synthetic":
            from bao.data.synthetic import generate_synthetic_voc

            root = staging / SYNTHETIC_DIR
            synthetic = cfg.synthetic
            generate_synthetic_voc(
                root, num_train=synthetic.num_train, num_val=synthetic.num_val,
                image_size=synthetic.image_size, seed=seed, num_classes=synthetic.num_classes,
            )
        else:
            root = Path(cfg.root)
            if not root.is_dir():
                raise DatasetError([f"{root}: data.root is not a directory"])
        # Relative paths in the manifest are relative to its final directory, not the staging one.
        problems: list[str] = []
        base = staging if cfg.dataset == "synthetic" else out_dir
        table, classes = _read_source(cfg, root, base, problems)
        if not problems:
            validate_table(table, len(classes), base, problems)
        if problems:
            raise DatasetError(problems)
        write_manifest(staging, table, list(classes), {"dataset": cfg.dataset})
    return summarize(table, classes)


def summarize(table: pd.DataFrame, classes: tuple[str, ...]) -> dict:
    counts = {role: int((table["split"] == role).sum()) for role in ("train", "val")}
    per_class = {
        name: int(sum(labels[index] for labels in table["labels"])) for index, name in enumerate(classes)
    }
    return {"num_images": counts, "num_classes": len(classes), "images_per_class": per_class}
