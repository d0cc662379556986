"""Dense CRF refinement of pseudo-labels (Krähenbühl & Koltun), with the BAO paper's settings.

The unary comes from the labels themselves (``gt_prob`` on the given label), the pairwise terms
are a Gaussian smoothness kernel and a bilateral appearance kernel on the RGB image. Only the
background and the classes present in the image compete. The CRF is CPU-bound, so
``refine_in_workers`` runs it in a process pool while the caller keeps producing labels.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from bao.config import CrfConfig

# A job: (key, image path, labels (H, W) uint8 in 0..K, labels allowed besides background 0).
CrfJob = tuple[object, Path, np.ndarray, Sequence[int]]


def crf_refine(image: np.ndarray, labels: np.ndarray, allowed: Sequence[int], cfg: CrfConfig) -> np.ndarray:
    """(H, W) uint8: ``labels`` after ``cfg.iterations`` mean-field steps; ``image`` RGB uint8 (H, W, 3)."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_labels

    if image.shape[:2] != labels.shape:
        raise ValueError(f"crf: image {image.shape[:2]} and labels {labels.shape} differ in size")
    values = np.array(sorted({0, *(int(v) for v in allowed)}), dtype=np.uint8)
    if len(values) < 2:
        return labels.copy()
    lookup = np.zeros(256, dtype=np.int64)
    lookup[values] = np.arange(len(values))
    compact = lookup[labels]
    height, width = labels.shape
    crf = dcrf.DenseCRF2D(width, height, len(values))
    crf.setUnaryEnergy(unary_from_labels(compact, len(values), gt_prob=cfg.gt_prob, zero_unsure=False))
    crf.addPairwiseGaussian(sxy=cfg.gaussian_sxy, compat=cfg.gaussian_compat)
    crf.addPairwiseBilateral(sxy=cfg.bilateral_sxy, srgb=cfg.bilateral_srgb, rgbim=np.ascontiguousarray(image), compat=cfg.bilateral_compat)
    marginals = np.array(crf.inference(cfg.iterations)).reshape(len(values), height, width)
    return values[marginals.argmax(axis=0)]


def _run_job(job: CrfJob, cfg: CrfConfig) -> tuple[object, np.ndarray]:
    from bao.data.datasets import load_image

    key, image_path, labels, allowed = job
    return key, crf_refine(load_image(image_path), labels, allowed, cfg)


def refine_in_workers(jobs: Iterable[CrfJob], cfg: CrfConfig, workers: int = 0) -> Iterator[tuple[object, np.ndarray]]:
    """Yield (key, refined labels) in job order; ``workers`` processes (0 = this process).

    At most two jobs per worker wait at a time, so a fast producer (GPU inference) never piles
    up every label map of the dataset in memory."""
    if workers == 0:
        for job in jobs:
            yield _run_job(job, cfg)
        return
    # The platform's default start method (fork on Linux, as DataLoader workers use): workers
    # start in milliseconds and only run numpy, OpenCV and the CRF, never torch.
    with multiprocessing.Pool(workers) as pool:
        pending: deque = deque()
        for job in jobs:
            pending.append(pool.apply_async(_run_job, (job, cfg)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
