"""Dense CRF refinement: it snaps labels to image edges, keeps to the image's classes, runs in workers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from bao.config import CrfConfig
from bao.infer.crf import crf_refine, refine_in_workers

PAPER = dict(enabled=True, iterations=10, gt_prob=0.7, gaussian_sxy=3, gaussian_compat=3,
             bilateral_sxy=50, bilateral_srgb=5, bilateral_compat=10)


def scene(shift: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bright square on a dark noisy background, its true mask, and a label shifted by ``shift``."""
    rng = np.random.default_rng(shift)
    image = np.full((64, 64, 3), 40, dtype=np.uint8)
    image[16:48, 16:48] = 200
    image = np.clip(image.astype(int) + rng.integers(-8, 9, image.shape), 0, 255).astype(np.uint8)
    truth = np.zeros((64, 64), dtype=np.uint8)
    truth[16:48, 16:48] = 3
    return image, truth, np.roll(truth, shift, axis=1)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.logical_and(a, b).sum() / np.logical_or(a, b).sum())


def test_crf_pulls_a_shifted_label_back_onto_the_object():
    image, truth, label = scene(shift=5)
    refined = crf_refine(image, label, [3], CrfConfig(**PAPER))
    assert set(np.unique(refined)) <= {0, 3}
    assert iou(refined == 3, truth == 3) > iou(label == 3, truth == 3) + 0.1


def test_crf_only_uses_background_and_the_allowed_classes():
    image, _, label = scene(shift=2)
    label = label.copy()
    label[0:4, 0:4] = 7  # a class the image does not have: it may only become background or 3
    refined = crf_refine(image, label, [3], CrfConfig(**PAPER))
    assert set(np.unique(refined)) <= {0, 3}
    only_background = crf_refine(image, np.zeros_like(label), [], CrfConfig(**PAPER))
    assert not only_background.any()


def test_crf_rejects_mismatched_sizes():
    image, _, label = scene()
    with pytest.raises(ValueError, match="differ in size"):
        crf_refine(image, label[:10], [3], CrfConfig(**PAPER))


def test_worker_processes_give_the_in_process_result_in_order(tmp_path):
    jobs = []
    for shift in range(4):
        image, _, label = scene(shift)
        path = tmp_path / f"{shift}.png"
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))  # PNG: lossless
        jobs.append((shift, path, label, [3]))
    serial = list(refine_in_workers(jobs, CrfConfig(**PAPER)))
    parallel = list(refine_in_workers(jobs, CrfConfig(**PAPER), workers=2))
    assert [key for key, _ in parallel] == [0, 1, 2, 3]
    for (_, a), (_, b) in zip(serial, parallel):
        assert np.array_equal(a, b)
    image, _, label = scene(1)
    assert np.array_equal(serial[1][1], crf_refine(image, label, [3], CrfConfig(**PAPER)))
