"""Side-by-side numbers of BAO and the threshold baseline, for metrics files and plots."""

from __future__ import annotations

import logging

import numpy as np


def baseline_point(sweep: dict, threshold: float) -> dict:
    """The sweep's point (mIoU, foreground recall and precision) at the swept t nearest ``threshold``."""
    return min(sweep["curve"], key=lambda point: abs(point["threshold"] - threshold))


BAO_KEYS = (
    "pseudo_miou_bao", "pseudo_pixel_accuracy_bao", "bao_minus_best_baseline", "bao_minus_mid_baseline",
    "foreground_recall_bao", "foreground_precision_bao",
)
BASELINE_KEYS = (
    "baseline_best_t", "baseline_best_miou", "baseline_worst_t", "baseline_worst_miou",
    "baseline_mid_t", "baseline_mid_miou", "baseline_range_0.1_0.9", "baseline_per_class_iou",
    "foreground_recall_mid_t", "foreground_precision_mid_t",
)
PER_IMAGE_KEYS = {  # metrics key -> key of the sweep's per_image_best_t summary
    "per_image_best_t_mean": "mean", "per_image_best_t_std": "std", "per_image_best_t_p10": "p10",
    "per_image_best_t_p90": "p90", "per_image_oracle_miou": "oracle_miou",
}


def per_image_metrics(sweep: dict) -> dict:
    """The spread of each image's own best t and the per-image oracle's mIoU (``bao.infer.per_image``)."""
    summary = sweep.get("per_image_best_t")
    return {key: (summary[field] if summary else None) for key, field in PER_IMAGE_KEYS.items()}


def per_image_plot_rows(sweep: dict) -> list[dict]:
    """How many images pick each t as their own best, for the histogram beside the sweep."""
    summary = sweep.get("per_image_best_t")
    if not summary:
        return [{"threshold": point["threshold"], "images": 0} for point in sweep["curve"]]
    return list(summary["histogram"])


def no_ground_truth_metrics() -> dict:
    """The same keys with null values, and a flag that says why: the training split has no masks."""
    return {
        "ground_truth_available": False,
        **dict.fromkeys(BAO_KEYS),
        "baseline_best_is_oracle": True,
        **dict.fromkeys(BASELINE_KEYS),
        **dict.fromkeys(PER_IMAGE_KEYS),
        "bao_per_class_iou": None,
    }


def comparison_metrics(bao: dict | None, sweep: dict) -> dict:
    """BAO's pseudo-label mIoU next to the baseline's best (an oracle: t picked with ground truth),
    worst and middle t within [0.1, 0.9]."""
    if sweep.get("best") is None:
        return no_ground_truth_metrics()
    inner = [p for p in sweep["curve"] if 0.1 - 1e-9 <= p["threshold"] <= 0.9 + 1e-9] or sweep["curve"]
    worst = min(inner, key=lambda point: point["miou"])
    mid = baseline_point(sweep, 0.5)
    metrics = {
        "ground_truth_available": True,
        "baseline_best_t": sweep["best_threshold"],
        "baseline_best_miou": sweep["best"]["miou"],
        "baseline_best_is_oracle": True,
        "baseline_worst_t": worst["threshold"],
        "baseline_worst_miou": worst["miou"],
        "baseline_mid_t": 0.5,
        "baseline_mid_miou": mid["miou"],
        "baseline_range_0.1_0.9": max(p["miou"] for p in inner) - worst["miou"],
        "baseline_per_class_iou": sweep["best"]["per_class_iou"],
        # how much of the objects the t = 0.5 labels cover (real photos' CAMs light only parts of them)
        "foreground_recall_mid_t": mid["foreground_recall"],
        "foreground_precision_mid_t": mid["foreground_precision"],
        **per_image_metrics(sweep),
    }
    if bao is not None:
        metrics = {
            "pseudo_miou_bao": bao["miou"],
            "pseudo_pixel_accuracy_bao": bao["pixel_accuracy"],
            "bao_minus_best_baseline": bao["miou"] - sweep["best"]["miou"],
            "bao_minus_mid_baseline": bao["miou"] - metrics["baseline_mid_miou"],
            "foreground_recall_bao": bao["foreground_recall"],
            "foreground_precision_bao": bao["foreground_precision"],
            **metrics,
            "bao_per_class_iou": bao["per_class_iou"],
        }
    return metrics


def sweep_plot_rows(sweep: dict, bao: dict | None) -> list[dict]:
    """One row per t: the baseline curve and BAO's (constant) value, for ``dvc plots``."""
    bao_miou = bao["miou"] if bao is not None else np.nan
    return [{"threshold": p["threshold"], "baseline_miou": p["miou"], "bao_miou": bao_miou} for p in sweep["curve"]]


def crf_metrics(bao: dict | None, bao_crf: dict | None) -> dict:
    """BAO's pseudo-label mIoU after the dense CRF, next to the value without it."""
    if bao is None or bao_crf is None:
        return {}
    return {
        "pseudo_miou_bao_crf": bao_crf["miou"],
        "crf_gain": bao_crf["miou"] - bao["miou"],
        "bao_crf_per_class_iou": bao_crf["per_class_iou"],
    }


def per_class_rows(result: dict | None, class_names: list[str]) -> list[dict]:
    """One row per class (background first) for the per-class IoU bars; an unseen class is empty."""
    per_class = result["per_class_iou"] if result is not None else {}
    return [{"class": name, "iou": per_class.get(name)} for name in class_names]


def log_sweep(sweep: dict) -> None:
    """The sweep's headline in the log: the oracle best t and how much the images' own best t vary."""
    log = logging.getLogger("bao")
    if sweep["best"] is None:
        log.warning("no training image has a ground-truth mask: the sweep has no mIoU to report")
        return
    log.info("baseline: best t=%.2f mIoU=%.4f (oracle: t chosen with ground truth)", sweep["best_threshold"], sweep["best"]["miou"])
    per_image = sweep["per_image_best_t"]
    log.info("per-image best t: mean %.3f std %.3f p10 %.2f p90 %.2f; per-image oracle mIoU %.4f",
             per_image["mean"], per_image["std"], per_image["p10"], per_image["p90"], per_image["oracle_miou"])
