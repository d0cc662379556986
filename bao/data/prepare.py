"""Build the manifest for the configured dataset; validate it whole before writing anything.

Order: read the source (format problems), validate every row (files, pixel formats, labels,
masks), and only when no problem was found convert odd images, run the source's deferred work
(COCO masks) and write the manifest. Everything goes to a staging directory that replaces the
output only on success, so a failed run leaves the previous output untouched. Nothing else is
written before validation has passed, and then only under the staging directory (and COCO's
mask cache). Ids and paths from the dataset are hostile: ids that would leave their folder and
files resolving outside data.root (or sbd_root) are listed problems (see ``RootGuard``).
A lock on the output's parent directory keeps two runs from writing it at once.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import pandas as pd

from bao.config import DataConfig
from bao.data.manifest import write_manifest
from bao.data.source import RootGuard, Source
from bao.data.validate import DatasetError, convert_images, validate_table
from bao.data.voc import VOC_CLASSES, read_voc
from bao.io import atomic_dir, atomic_path, exclusive_lock, write_json

SYNTHETIC_DIR = "synthetic"
log = logging.getLogger("bao")


def read_source(cfg: DataConfig, root: Path, base: Path, staging: Path, *, problems: list[str], guard: RootGuard) -> Source:
    """Dispatch on ``data.dataset``; every reader returns the same kind of table."""
    splits = {"train": cfg.train_split, "val": cfg.val_split}
    if cfg.dataset == "synthetic":
        from bao.data.synthetic import SYNTHETIC_CLASSES

        return read_voc(root, splits, tuple(SYNTHETIC_CLASSES[: cfg.synthetic.num_classes]), base, problems=problems, staging=staging, guard=guard)
    if cfg.dataset == "voc":
        return read_voc(root, splits, VOC_CLASSES, base, problems=problems, staging=staging, sbd_root=_sbd_root(cfg), guard=guard)
    if cfg.dataset == "coco":
        from bao.data.coco import read_coco

        return read_coco(root, splits, base, problems, cache_dir=Path(cfg.cache_dir), guard=guard)
    from bao.data.folder import read_folder

    return read_folder(root, splits, cfg.folder, base, problems=problems, guard=guard)


def _sbd_root(cfg: DataConfig) -> Path | None:
    return Path(cfg.sbd_root) if cfg.sbd_root and cfg.dataset == "voc" else None


def _source_root(cfg: DataConfig, staging: Path) -> Path:
    if cfg.dataset == "synthetic":
        from bao.data.synthetic import generate_synthetic_voc

        root = staging / SYNTHETIC_DIR
        synthetic = cfg.synthetic
        generate_synthetic_voc(
            root, num_train=synthetic.num_train, num_val=synthetic.num_val,
            image_size=synthetic.image_size, seed=synthetic.seed, num_classes=synthetic.num_classes,
            object_scale=synthetic.object_scale, num_objects=synthetic.num_objects,
            distractors=synthetic.distractors, texture_regions=synthetic.texture_regions, class_part=synthetic.class_part,
            truncation=synthetic.truncation,
        )
        return root
    root = Path(cfg.root)
    if not root.is_dir():
        raise DatasetError([f"{root}: data.root is not a directory"])
    return root


def prepare_dataset(cfg: DataConfig, out_dir: str | Path, *, workers: int = 2, summary_path: str | Path | None = None) -> dict:
    """Write ``out_dir`` (manifest, classes, and any generated images or masks) atomically;
    ``workers`` threads decode images while validating them (the synthetic data's seed is
    ``cfg.synthetic.seed``, not the training seed). The counts it returns are also written to
    ``summary_path`` if given: staged with the directory and renamed right after it, so a failure
    leaves the previous pair, never a new directory next to old counts."""
    out_dir = Path(out_dir)
    # The lock is on the output's parent directory, which outlives the output's replacement
    with exclusive_lock(out_dir.parent, str(out_dir)), contextlib.ExitStack() as after_the_directory:
        with atomic_dir(out_dir) as staging:
            root = _source_root(cfg, staging)
            guard = RootGuard.of([root, _sbd_root(cfg), staging], allow_outside=cfg.allow_outside_root)
            # Stored paths are relative to the final directory; the staging directory is its sibling,
            # so resolving them against it during validation reaches the same files.
            problems: list[str] = []
            source = read_source(cfg, root, out_dir, staging, problems=problems, guard=guard)
            if problems and source.table.empty:
                raise DatasetError(problems)
            conversions = validate_table(
                source.table, len(source.classes), staging, problems, workers=workers, guard=guard, max_pixels=cfg.max_image_pixels
            )
            if problems:
                raise DatasetError(problems)
            table = source.table
            converted = convert_images(table, conversions, staging, staging, max_pixels=cfg.max_image_pixels)
            if converted:
                log.warning("converted %d image(s) to 8-bit RGB copies: %s", sum(converted.values()), dict(converted))
            finished = source.finish(staging, table) if source.finish is not None else {}
            write_manifest(staging, table, list(source.classes), {"dataset": cfg.dataset})
            summary = summarize(table, source.classes) | {"converted_images": dict(converted), "source": {**source.info, **finished}}
            if summary_path is not None:  # staged now, renamed once the directory is in place
                write_json(after_the_directory.enter_context(atomic_path(summary_path)), summary)
    return summary


def summarize(table: pd.DataFrame, classes: tuple[str, ...]) -> dict:
    counts = {role: int((table["split"] == role).sum()) for role in ("train", "val")}
    per_class = {
        name: int(sum(labels[index] for labels in table["labels"])) for index, name in enumerate(classes)
    }
    masks = {role: int(((table["split"] == role) & (table["mask_path"] != "")).sum()) for role in ("train", "val")}
    return {"num_images": counts, "num_classes": len(classes), "images_per_class": per_class, "num_masks": masks}
