"""Figures for people: the pseudo-label gallery (``dvc plots show`` renders it next to the curves)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bao.data.palette import voc_palette
from bao.io import atomic_path

PALETTE = np.array(voc_palette(), dtype=np.uint8).reshape(256, 3)


def colorize(mask: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """RGB (H, W, 3) of a class-index mask in VOC colours; a missing mask is mid grey."""
    if mask is None:
        return np.full((*shape, 3), 128, dtype=np.uint8)
    return PALETTE[mask]


def gallery_columns(row: dict, threshold: float, oracle: bool = True) -> list[tuple[str, np.ndarray, str | None]]:
    """(title, picture, colormap) per panel; BAO + CRF only when the row has it."""
    shape = row["image"].shape[:2]
    columns = [
        (row["image_id"] if row.get("best_t") is None else f"{row['image_id']}\nown best t={row['best_t']:g}", row["image"], None),
        ("ground truth", colorize(row["gt"], shape), None),
        (f"CAM, t={threshold:g}{' (oracle)' if oracle else ''}", colorize(row["baseline"], shape), None),
        ("BAO (no threshold)", colorize(row["bao"], shape), None),
    ]
    if row.get("bao_crf") is not None:
        columns.append(("BAO + CRF", colorize(row["bao_crf"], shape), None))
    columns.append(("BAO background map", row["background"], "viridis"))
    return columns


def save_gallery(path: str | Path, rows: list[dict], threshold: float, oracle: bool = True) -> None:
    """A PNG grid, one row per image: image, ground truth, CAM baseline at its best t, BAO's
    pseudo-label (and after the CRF), BAO's normalized background map."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    if not rows:
        raise ValueError("gallery: no images to show (report.gallery_size is 0 or the split is empty)")
    panels = [gallery_columns(row, threshold, oracle) for row in rows]
    count = len(panels[0])
    figure, axes = plt.subplots(len(rows), count, figsize=(2.2 * count, 2.2 * len(rows)), squeeze=False)
    for row_axes, columns in zip(axes, panels):
        for axis, (title, picture, cmap) in zip(row_axes, columns):
            axis.imshow(picture, cmap=cmap, vmin=0.0 if cmap else None, vmax=1.0 if cmap else None, interpolation="nearest")
            axis.set_title(title, fontsize=8)
            axis.axis("off")
    figure.tight_layout()
    with atomic_path(path) as temp:
        figure.savefig(temp, format="png", dpi=80)
    plt.close(figure)
