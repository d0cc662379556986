"""Why BAO's labels win or lose against the threshold they replace, in figures every run reports.

BAO's label at a pixel is the argmax of [background map, present classes' CAMs], each min-max
normalised over the image. Its errors therefore come from one of four places, each scored here
against the masks of the training images:

- the CAMs: BAO training also moves the backbone, so its own CAMs are swept over t exactly as the
  CAM network's are (``own_cams_*``: did they get worse?);
- the background map: the same map beside the CAM network's CAMs (``bg_with_cam_net_cams``), the
  student's own argmax over its K+1 channels, absent classes left out (``student_argmax``), and that
  argmax's background/foreground decision with the classes from the CAMs
  (``student_background_cam_classes``: no min-max normalisation of the background anywhere), and
  both background rules of ``pseudo_label.background`` whichever is in use: the official min-max
  normalised map (``minmax_background``) and the student's background probability against the
  max-normalised CAMs (``softmax_background``);
- the calibration between them: the mean normalised background score against the teacher's
  background (1 - the largest max-normalised CAM), and the foreground share of each labelling
  against the masks' (``fg_share_*``);
- the alignment: the translation of BAO's labels that best matches the masks (``best_shift_*``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from bao.data.palette import IGNORE_INDEX
from bao.distributed import all_reduce_sum
from bao.infer.pseudo import max_normalized_cams, rule_scores, scores_to_labels, threshold_pseudo_labels
from bao.metrics import ConfusionMatrix, confusion_counts, stacked_confusion_counts

MID_T = 0.5


def shift_grid(max_shift: int, step: int) -> list[tuple[int, int]]:
    """(dy, dx) pairs on a square grid within ``max_shift`` pixels, (0, 0) first."""
    offsets = range(-max_shift, max_shift + 1, step) if max_shift > 0 else [0]
    grid = [(dy, dx) for dy in offsets for dx in offsets if (dy, dx) != (0, 0)]
    return [(0, 0), *grid]


def translations(label: np.ndarray, shifts: Sequence[tuple[int, int]]) -> Iterator[np.ndarray]:
    """``label`` moved by each (dy, dx) (down and right positive), the uncovered strip filled from
    its edge; padded once for the largest shift."""
    reach = max(max(abs(dy), abs(dx)) for dy, dx in shifts)
    h, w = label.shape
    padded = np.pad(label, reach, mode="edge")
    for dy, dx in shifts:
        yield padded[reach - dy : reach - dy + h, reach - dx : reach - dx + w]


def shifted_counts(gt: np.ndarray, label: np.ndarray, shifts: Sequence[tuple[int, int]], num_classes: int) -> np.ndarray:
    """(S, K, K) confusion counts of ``label`` translated by each shift against ``gt``.

    Every shift is scored on the same pixels: the image less a border as wide as the largest shift
    (the whole image when it is too small for one), so a gain measures the alignment alone. Scoring
    each shift on its own overlap would drop a different border strip per shift, and dropping a
    strip where the labels are poor raises the mIoU without any misalignment."""
    margin = max(max(abs(dy), abs(dx)) for dy, dx in shifts)
    h, w = gt.shape
    if h <= 2 * margin or w <= 2 * margin:
        margin = 0
    window = (slice(margin, h - margin), slice(margin, w - margin))
    return stacked_confusion_counts(gt[window], np.stack([moved[window] for moved in translations(label, shifts)]), num_classes)


def foreground_share(label: np.ndarray, valid: np.ndarray) -> tuple[int, int]:
    """(foreground pixels, scored pixels) of ``label`` where ``valid``."""
    return int(((label != 0) & valid).sum()), int(valid.sum())


class Diagnosis:
    """Confusion matrices and sums of every figure above, added image by image.

    ``add_maps`` (main thread, torch) turns one image's merged maps into the labellings scored;
    ``add_scored`` (any thread) scores them against the mask and adds the counts."""

    def __init__(self, num_classes: int, thresholds: Sequence[float], *, max_shift: int, shift_step: int, with_cam_net: bool):
        self.k = num_classes
        self.thresholds = list(thresholds)
        self.shifts = shift_grid(max_shift, shift_step)
        self.with_cam_net = with_cam_net
        self.own_sweep = [ConfusionMatrix(self.k) for _ in self.thresholds]
        names = ["student_argmax", "student_background_cam_classes", "minmax_background", "softmax_background",
                 *(["bg_with_cam_net_cams"] if with_cam_net else [])]
        self.labellings = {name: ConfusionMatrix(self.k) for name in names}
        self.shifted = [ConfusionMatrix(self.k) for _ in self.shifts]
        self.sums = dict.fromkeys(("bg_score", "teacher_bg", "pixels", "fg_bao", "fg_mid_t", "fg_truth", "scored"), 0.0)

    def labellings_of(
        self, maps: dict[str, torch.Tensor], labels: torch.Tensor, *, bao_scores_map: torch.Tensor, cam_net_cams: torch.Tensor | None, views: int,
        background: str = "minmax",
    ) -> dict:
        """Everything ``add_scored`` needs of one image, as numpy arrays."""
        present = labels.bool().to(maps["cams"].device)
        own = max_normalized_cams(maps["cams"], labels)
        am = torch.cat([maps["background"], maps["am_classes"]]).float()
        am[1:][~present] = float("-inf")
        student = am.max(dim=0).indices  # first maximum, as argmax (10x faster over a leading dim on CPU)
        cam_classes = own.max(dim=0).indices + 1
        out = {
            "own_sweep": threshold_pseudo_labels(own, self.thresholds),
            "student_argmax": student.to(torch.uint8).cpu().numpy(),
            "student_background_cam_classes": torch.where(student == 0, 0, cam_classes).to(torch.uint8).cpu().numpy(),
            "bg_score": float(bao_scores_map[0].sum()), "teacher_bg": float((1.0 - own.amax(dim=0)).sum()), "pixels": own[0].numel(),
            "mid_t": threshold_pseudo_labels(own, [MID_T])[0],
        }
        labels_in_use = scores_to_labels(bao_scores_map)  # the stage's own rule: scored once, not recomputed
        for rule in ("minmax", "softmax"):
            same = rule == background
            out[f"{rule}_background"] = labels_in_use if same else scores_to_labels(rule_scores(rule, maps, maps["cams"], labels, views=views))
        if cam_net_cams is not None:
            same_cams = cam_net_cams is maps["cams"]
            out["bg_with_cam_net_cams"] = labels_in_use if same_cams else scores_to_labels(rule_scores(background, maps, cam_net_cams, labels, views=views))
        return out

    def score(self, gt: np.ndarray, bao_label: np.ndarray, parts: dict) -> dict:
        """One image's counts and sums (pure: runs in an output thread)."""
        valid = gt != IGNORE_INDEX
        fg_bao, scored = foreground_share(bao_label, valid)
        return {
            "own_sweep": stacked_confusion_counts(gt, np.stack(parts["own_sweep"]), self.k),
            "labellings": {name: confusion_counts(gt, parts[name], self.k) for name in self.labellings},
            "shifted": shifted_counts(gt, bao_label, self.shifts, self.k),
            "sums": {"bg_score": parts["bg_score"], "teacher_bg": parts["teacher_bg"], "pixels": parts["pixels"], "fg_bao": fg_bao,
                     "fg_mid_t": foreground_share(parts["mid_t"], valid)[0], "fg_truth": foreground_share(gt, valid)[0], "scored": scored},
        }

    def add(self, scored: dict) -> None:
        """Fold in what ``score`` returned (main thread)."""
        for matrix, counts in zip(self.own_sweep, scored["own_sweep"]):
            matrix.add(counts)
        for name, counts in scored["labellings"].items():
            self.labellings[name].add(counts)
        for matrix, counts in zip(self.shifted, scored["shifted"]):
            matrix.add(counts)
        for key, value in scored["sums"].items():
            self.sums[key] += value

    def all_reduce(self) -> None:
        for matrix in (*self.own_sweep, *self.labellings.values(), *self.shifted):
            matrix.all_reduce()
        totals = all_reduce_sum(np.array([self.sums[key] for key in self.sums], dtype=np.float64))
        self.sums = {key: float(value) for key, value in zip(self.sums, totals)}

    def summary(self, class_names: Sequence[str]) -> dict | None:
        """The figures, or None when no image was scored."""
        if not self.shifted[0].counted:
            return None
        names = list(class_names)
        sweep = [matrix.compute(names)["miou"] for matrix in self.own_sweep]
        best = int(np.nanargmax(sweep))
        mid = min(range(len(self.thresholds)), key=lambda i: abs(self.thresholds[i] - MID_T))
        shifted = [matrix.compute(names)["miou"] for matrix in self.shifted]
        best_shift = int(np.nanargmax(shifted))
        scored, pixels = max(self.sums["scored"], 1.0), max(self.sums["pixels"], 1.0)
        return {
            "own_cams_best_t": self.thresholds[best], "own_cams_best_miou": sweep[best], "own_cams_mid_miou": sweep[mid],
            **{f"{name}_miou": matrix.compute(names)["miou"] for name, matrix in self.labellings.items()},
            "bg_score_mean": self.sums["bg_score"] / pixels, "teacher_bg_mean": self.sums["teacher_bg"] / pixels,
            "fg_share_bao": self.sums["fg_bao"] / scored, "fg_share_mid_t": self.sums["fg_mid_t"] / scored,
            "fg_share_truth": self.sums["fg_truth"] / scored,
            "best_shift_dy": self.shifts[best_shift][0], "best_shift_dx": self.shifts[best_shift][1],
            "best_shift_gain": shifted[best_shift] - shifted[0],
        }
