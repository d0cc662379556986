"""Stage 4 work: BAO's threshold-free pseudo-labels and, in the same pass, the CAM threshold sweep
(an oracle baseline) with the CAM labels at one t.

A BAO network trained around the frozen CAM network (``bao.cam_lr: 0``) computes that network's
CAMs on its way to the background map, so one forward pass per scale serves both; otherwise the CAM
network runs its own pass beside BAO's. Both stream the training images through DataLoader workers (decoding), run ``runtime.inference_batch_size``
images per forward pass on the device, and hand each image's output (PNG writing, scoring
against its mask) to a small bounded thread pool, so neither the device nor memory waits on the
disk. Under ``torchrun`` each process takes a shard of the images and the confusion matrices are summed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Subset

from bao.config import CrfConfig, PseudoLabelConfig, RuntimeConfig
from bao.data.datasets import ImageLabelDataset, load_image
from bao.data.manifest import Manifest
from bao.data.palette import read_mask, save_mask
from bao.data.transforms import eval_transform
from bao.infer.align import GeometryFn
from bao.infer.calibrate import calibrate_shift, calibration_scale
from bao.infer.crf import crf_refine, refine_in_workers
from bao.infer.diagnose import Diagnosis
from bao.infer.per_image import PerImageBestT, farthest_from
from bao.infer.predict import collate_full_size, iterate_multiscale, map_forward, shard_dataset
from bao.infer.pseudo import max_normalized_cams, rule_scores, scores_to_labels, threshold_pseudo_labels
from bao.io import BoundedPool
from bao.metrics import ConfusionMatrix, stacked_confusion_counts
from bao.train.common import make_loader

OUTPUT_THREADS = 2
log = logging.getLogger("bao")


def _train_images(manifest: Manifest, cfg: PseudoLabelConfig, runtime: RuntimeConfig) -> tuple[ImageLabelDataset, torch.utils.data.DataLoader]:
    """uint8 images: each scale is resized from the uint8 image, then normalised (``_multiscale``)."""
    dataset = ImageLabelDataset(manifest, "train")
    loader = make_loader(shard_dataset(dataset), runtime.inference_batch_size, shuffle=False, num_workers=runtime.loader_workers, seed=0, runtime=runtime, collate_fn=collate_full_size)
    return dataset, loader


def alignment(
    model: nn.Module, dataset: ImageLabelDataset, *, device: torch.device, cfg: PseudoLabelConfig, runtime: RuntimeConfig, with_am: bool = False
) -> tuple[str, GeometryFn, dict]:
    """How maps are drawn back on the image: (``align`` for ``resize_to_image``, the geometry, what
    the metrics say of it). ``calibrated``: the traced geometry moved to where the network responds
    (``bao.infer.calibrate``), measured once per model on the first ``calibration_images`` training
    images (every process the same ones), on its CAMs (``with_am``: a BAO network, which needs labels)."""
    if cfg.align != "calibrated":
        return cfg.align, model.feature_geometry, {"mode": cfg.align}
    scale, count = calibration_scale(cfg.scales), min(cfg.calibration_images, len(dataset))
    cache = model.__dict__.setdefault("_calibrations", {})
    if (scale, count) not in cache:
        items = [dataset[i] for i in range(count)]
        forward = map_forward(model, device, with_am, runtime.amp, channels_last=runtime.channels_last, normalize=eval_transform(model.normalization),
                              fold_batchnorm=runtime.fold_batchnorm)
        model.eval()
        with torch.no_grad():
            calibration = cache[(scale, count)] = calibrate_shift(
                forward, [item["image"].to(device) for item in items], torch.stack([item["labels"] for item in items]).to(device),
                scale=scale, traced=model.feature_geometry, batch_size=runtime.inference_batch_size,
            )
        log.info("alignment: cells drawn %+.1f input px from the traced centres (mirror disagreement %.4f, traced %.4f)",
                 calibration.shift, calibration.disagreement, calibration.disagreement_traced)
        if calibration.at_limit:
            log.warning("alignment: the best shift is the largest tried (one stride); an untrained network responds nowhere in "
                        "particular, and a trained one this far off its traced cells is worth a look (pseudo_label.align)")
    calibration = cache[(scale, count)]
    return "geometric", calibration.geometry(model.feature_geometry), calibration.summary()


def share_alignment(source: nn.Module, target: nn.Module) -> None:
    """Let ``target`` use the calibrations measured on ``source`` (and add to them): for a BAO
    network around the frozen CAM network ``source``, whose CAMs are that network's, so the shift
    is measured once."""
    target.__dict__["_calibrations"] = source.__dict__.setdefault("_calibrations", {})


def _multiscale(model: nn.Module, dataset: ImageLabelDataset, loader, *, device: torch.device, cfg: PseudoLabelConfig, with_am: bool, desc: str,
                runtime: RuntimeConfig):
    """(index, merged maps, labels) per image of ``loader`` (uint8 images of ``dataset``), as ``cfg`` says."""
    align, geometry, _ = alignment(model, dataset, device=device, cfg=cfg, runtime=runtime, with_am=with_am)
    return iterate_multiscale(
        model, loader, device, cfg.scales, flip=cfg.flip, with_am=with_am, desc=desc, amp=runtime.amp, channels_last=runtime.channels_last,
        align=align, normalize=eval_transform(model.normalization), geometry=geometry, fold_batchnorm=runtime.fold_batchnorm,
    )


def _has_train_masks(manifest: Manifest) -> bool:
    """Whether any training image has a ground-truth mask to score against."""
    return bool((manifest.split("train")["mask_path"] != "").any())


def _gt_path(dataset: ImageLabelDataset, index: int) -> Path | None:
    stored = dataset.rows.at[index, "mask_path"]
    return dataset.manifest.resolve(stored) if stored else None


def _gt_mask(dataset: ImageLabelDataset, index: int) -> np.ndarray | None:
    path = _gt_path(dataset, index)
    return read_mask(path) if path is not None else None


def _score(name: str, gt_path: Path | None, predictions: list[np.ndarray], num_classes: int) -> tuple[str, np.ndarray | None]:
    """(name, (len(predictions), K, K) counts) against the mask at ``gt_path``; None without a mask."""
    if gt_path is None:
        return name, None
    return name, stacked_confusion_counts(read_mask(gt_path), np.stack(predictions), num_classes)


def _save_and_score(name: str, path: Path, prediction: np.ndarray, gt_path: Path | None, *, num_classes: int) -> tuple[str, np.ndarray | None]:
    save_mask(path, prediction)
    return _score(name, gt_path, [prediction], num_classes)


def _save(path: Path, prediction: np.ndarray) -> tuple[str, None]:
    save_mask(path, prediction)
    return "saved", None


def _diagnose(diagnosis: Diagnosis, gt_path: Path, prediction: np.ndarray, parts: dict) -> tuple[str, dict]:
    return "diagnosis", diagnosis.score(read_mask(gt_path), prediction, parts)


def _all_reduce(matrices: dict[str, list[ConfusionMatrix]]) -> None:
    for group in matrices.values():
        for matrix in group:
            matrix.all_reduce()


def class_names_with_background(manifest: Manifest) -> list[str]:
    return ["background", *manifest.classes]


CURVE_SCORES = ("miou", "foreground_recall", "foreground_precision")  # each sweep point's, from ConfusionMatrix.compute


def _no_sweep(cfg: PseudoLabelConfig) -> dict:
    curve = [{"threshold": round(t, 6), **dict.fromkeys(CURVE_SCORES)} for t in cfg.thresholds]
    return {"ground_truth_available": False, "curve": curve, "best_threshold": None, "best": None, "per_image_best_t": None}


class SweepCounts:
    """The CAM baseline, image by image: its labels at every swept t scored against the mask (one
    confusion matrix per t, and each image's own best t), and with ``labels_out`` its labels at
    ``label_threshold`` saved as palette PNGs (e.g. for DeepLab trained on the threshold labels)."""

    def __init__(self, dataset: ImageLabelDataset, cfg: PseudoLabelConfig, *, labels_out: Path | None = None, label_threshold: float = 0.5):
        self.dataset, self.cfg = dataset, cfg
        self.labels_out, self.label_threshold = labels_out, label_threshold
        self.k = dataset.manifest.num_classes + 1
        self.matrices = [ConfusionMatrix(self.k) for _ in cfg.thresholds]
        self.per_image = PerImageBestT(cfg.thresholds, self.k)

    def submit(self, pool: BoundedPool, index: int, cams: torch.Tensor, labels: torch.Tensor) -> list:
        """Queue one image's output work; returns the finished results ``collect`` takes."""
        normalized = max_normalized_cams(cams, labels)
        done = []
        if self.labels_out is not None:
            label = threshold_pseudo_labels(normalized, [self.label_threshold])[0]
            done += pool.submit(_save, Path(self.labels_out) / f"{self.dataset.image_id(index)}.png", label)
        gt_path = _gt_path(self.dataset, index)
        if gt_path is not None:
            done += pool.submit(self._score, index, gt_path, threshold_pseudo_labels(normalized, self.cfg.thresholds))
        return done

    def _score(self, index: int, gt_path: Path, predictions: list[np.ndarray]) -> tuple[str, tuple[int, np.ndarray]]:
        return "sweep", (index, _score("sweep", gt_path, predictions, self.k)[1])

    def add(self, index: int, counts: np.ndarray) -> None:
        """One image's (T, K, K) counts: every t's matrix, and the image's own best t."""
        for matrix, matrix_counts in zip(self.matrices, counts):
            matrix.add(matrix_counts)
        self.per_image.add(counts, index)

    def result(self, alignment_summary: dict) -> dict:
        """The sweep (the stage's JSON): the curve, the oracle best t (chosen with ground truth) and
        the per-image best t, ``per_image_best_t["by_image"]`` by image id; every mIoU None when no
        training image has a mask."""
        if not _has_train_masks(self.dataset.manifest):
            return _no_sweep(self.cfg)
        for matrix in self.matrices:
            matrix.all_reduce()
        self.per_image.all_reduce()
        if not any(matrix.counted for matrix in self.matrices):
            raise ValueError("threshold sweep: no training image has a ground-truth mask to evaluate against")
        names = class_names_with_background(self.dataset.manifest)
        results = [matrix.compute(names) for matrix in self.matrices]
        curve = [{"threshold": round(t, 6), **{key: r[key] for key in CURVE_SCORES}} for t, r in zip(self.cfg.thresholds, results)]
        best = int(np.nanargmax([point["miou"] for point in curve]))
        summary = self.per_image.summary(names)
        if summary is not None:
            summary["by_image"] = {self.dataset.image_id(i): t for i, t in self.per_image.by_index().items()}
        return {
            "ground_truth_available": True, "curve": curve, "best_threshold": curve[best]["threshold"], "best": results[best],
            "per_image_best_t": summary, "alignment": alignment_summary,
        }


def _collector(matrices: dict[str, list[ConfusionMatrix]], diagnosis: Diagnosis | None = None, sweep: SweepCounts | None = None):
    """Folds the output threads' results, each (name, payload), into what they count."""

    def collect(results: list[tuple[str, object]]) -> None:
        for name, payload in results:
            if payload is None:  # a saved label, or an image without a mask
                continue
            if name == "diagnosis":
                diagnosis.add(payload)
            elif name == "sweep":
                sweep.add(*payload)
            else:
                for matrix, counts in zip(matrices[name], payload):
                    matrix.add(counts)

    return collect


def threshold_sweep(
    cam_net: nn.Module, manifest: Manifest, cfg: PseudoLabelConfig, device: torch.device, *, runtime: RuntimeConfig | None = None,
    labels_out: Path | None = None, label_threshold: float = 0.5,
) -> dict:
    """The CAM baseline alone (a CAM network without a BAO network): ``SweepCounts``' result over
    its own pass. Without any training mask and no labels wanted, no inference is run for nothing."""
    if not _has_train_masks(manifest) and labels_out is None:
        return _no_sweep(cfg)
    runtime = runtime or RuntimeConfig()
    dataset, loader = _train_images(manifest, cfg, runtime)
    sweep = SweepCounts(dataset, cfg, labels_out=labels_out, label_threshold=label_threshold)
    collect = _collector({}, sweep=sweep)
    maps_iter = _multiscale(cam_net, dataset, loader, device=device, cfg=cfg, with_am=False, desc="threshold sweep", runtime=runtime)
    with BoundedPool(OUTPUT_THREADS) as pool:
        for index, maps, labels in maps_iter:
            collect(sweep.submit(pool, index, maps["cams"], labels))
        collect(pool.drain())
    return sweep.result(alignment(cam_net, dataset, device=device, cfg=cfg, runtime=runtime)[2])


def view_count(cfg: PseudoLabelConfig) -> int:
    """How many maps multi-scale inference sums per image: one per scale, twice with flips."""
    return len(cfg.scales) * (2 if cfg.flip else 1)


def label_scores(maps: dict[str, torch.Tensor], labels: torch.Tensor, cfg: PseudoLabelConfig) -> torch.Tensor:
    """BAO's (K+1, H, W) scores by ``pseudo_label.background``; the label is their argmax."""
    return rule_scores(cfg.background, maps, maps["cams"], labels, views=view_count(cfg))


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    """Whether two networks hold identical tensors (a BAO network trained with its CAM network frozen)."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[key], sb[key].to(sa[key].device)) for key in sa)


def gallery_indices(manifest: Manifest, sweep: dict, count: int) -> list[int] | None:
    """Training images (dataset indices) for the gallery: those whose own best t lies farthest
    from the sweep's best t (``bao.infer.per_image.farthest_from``); None without per-image best t
    (no masks), and the gallery keeps its first images."""
    summary = sweep.get("per_image_best_t") or {}
    if sweep.get("best_threshold") is None or not summary.get("by_image"):
        return None
    dataset = ImageLabelDataset(manifest, "train")
    index_of = {dataset.image_id(i): i for i in range(len(dataset))}
    best_t = {index_of[image_id]: t for image_id, t in summary["by_image"].items() if image_id in index_of}
    return farthest_from(best_t, sweep["best_threshold"], count)


def _present_classes(labels: torch.Tensor) -> list[int]:
    """Label values (1..K) of the classes an image contains."""
    return (torch.nonzero(labels.cpu()).flatten() + 1).tolist()


def bao_pseudo_labels(
    bao_net: nn.Module,
    manifest: Manifest,
    cfg: PseudoLabelConfig,
    crf: CrfConfig,
    *,
    device: torch.device,
    out_dir: Path,
    runtime: RuntimeConfig | None = None,
    cam_net: nn.Module | None = None,
    sweep: bool = False,
    threshold_labels_out: Path | None = None,
    label_threshold: float = 0.5,
) -> dict:
    """Write one palette PNG per training image (CRF-refined when ``crf.enabled``).

    Returns metrics ``{"bao": ..., "bao_crf": ..., "diagnosis": ..., "alignment": ..., "sweep": ...}``
    (None where no mask, no CRF, ``pseudo_label.diagnose`` off or no sweep asked for).
    ``cam_net``: the CAM network, for the diagnosis's BAO background with the CAM network's CAMs
    and for the threshold baseline: with ``sweep`` its labels swept over t (``SweepCounts``), with
    ``threshold_labels_out`` its labels at ``label_threshold`` saved there. When the BAO network
    holds it unchanged, its CAMs come from BAO's own pass (and its alignment is measured once for
    both); otherwise it runs its own pass beside BAO's."""
    runtime = runtime or RuntimeConfig()
    dataset, loader = _train_images(manifest, cfg, runtime)
    k = manifest.num_classes + 1
    matrices = {"bao": [ConfusionMatrix(k)], "bao_crf": [ConfusionMatrix(k)]}
    baseline = None
    if sweep or threshold_labels_out is not None:
        if cam_net is None:
            raise ValueError("bao_pseudo_labels: the threshold baseline needs the CAM network (cam_net)")
        baseline = SweepCounts(dataset, cfg, labels_out=threshold_labels_out, label_threshold=label_threshold)
    diagnosis = Diagnosis(k, cfg.thresholds, max_shift=cfg.shift_max, shift_step=cfg.shift_step, with_cam_net=cam_net is not None) \
        if cfg.diagnose and _has_train_masks(manifest) else None
    distinct = cam_net is not None and not same_weights(cam_net, bao_net.cam_net)
    if cam_net is not None and not distinct:
        alignment(cam_net, dataset, device=device, cfg=cfg, runtime=runtime)  # measured on the CAM network, as a sweep of its own would
        share_alignment(cam_net, bao_net)
    maps_iter = _multiscale(bao_net, dataset, loader, device=device, cfg=cfg, with_am=True, desc="BAO pseudo-labels", runtime=runtime)
    cam_iter = None
    if distinct and (diagnosis is not None or baseline is not None):
        cam_iter = _multiscale(cam_net, dataset, _train_images(manifest, cfg, runtime)[1], device=device, cfg=cfg, with_am=False,
                               desc="CAM network", runtime=runtime)
    collect = _collector(matrices, diagnosis, baseline)

    with BoundedPool(OUTPUT_THREADS) as pool:

        def jobs():
            for index, maps, labels in maps_iter:
                scores = label_scores(maps, labels, cfg)
                prediction = scores_to_labels(scores)
                cam_net_cams = maps["cams"] if cam_net is not None else None
                if cam_iter is not None:
                    cam_index, cam_maps, _ = next(cam_iter)
                    assert cam_index == index, "the two passes must visit the images in the same order"
                    cam_net_cams = cam_maps["cams"]
                if baseline is not None:
                    collect(baseline.submit(pool, index, cam_net_cams, labels))
                gt_path = _gt_path(dataset, index)
                if diagnosis is not None and gt_path is not None:
                    parts = diagnosis.labellings_of(
                        maps, labels, bao_scores_map=scores, cam_net_cams=cam_net_cams, views=view_count(cfg), background=cfg.background
                    )
                    collect(pool.submit(_diagnose, diagnosis, gt_path, prediction, parts))
                yield index, dataset.manifest.resolve(dataset.rows.at[index, "image_path"]), prediction, _present_classes(labels)

        if crf.enabled:
            def scored_jobs():  # BAO's own labels are scored too, then the CRF's are saved
                for job in jobs():
                    collect(pool.submit(_score, "bao", _gt_path(dataset, job[0]), [job[2]], k))
                    yield job

            for index, final in refine_in_workers(scored_jobs(), crf, runtime.crf_workers):
                path = Path(out_dir) / f"{dataset.image_id(index)}.png"
                collect(pool.submit(_save_and_score, "bao_crf", path, final, _gt_path(dataset, index), num_classes=k))
        else:
            for index, _, prediction, _ in jobs():
                path = Path(out_dir) / f"{dataset.image_id(index)}.png"
                collect(pool.submit(_save_and_score, "bao", path, prediction, _gt_path(dataset, index), num_classes=k))
        collect(pool.drain())
    _all_reduce(matrices)
    names = class_names_with_background(manifest)
    results = {name: group[0].compute(names) if group[0].counted else None for name, group in matrices.items()}
    if diagnosis is not None:
        diagnosis.all_reduce()
    results["diagnosis"] = diagnosis.summary(names) if diagnosis is not None else None
    results["alignment"] = alignment(bao_net, dataset, device=device, cfg=cfg, runtime=runtime, with_am=True)[2]
    results["sweep"] = baseline.result(alignment(cam_net, dataset, device=device, cfg=cfg, runtime=runtime)[2]) if sweep else None
    return results


def _subset_loader(dataset: ImageLabelDataset, indices) -> torch.utils.data.DataLoader:
    return make_loader(Subset(dataset, list(indices)), 1, shuffle=False, num_workers=0, seed=0, collate_fn=collate_full_size)  # a few gallery images


def bao_gallery(
    bao_net: nn.Module, manifest: Manifest, cfg: PseudoLabelConfig, crf: CrfConfig, *, device: torch.device, indices, runtime: RuntimeConfig | None = None
) -> dict[int, dict]:
    """BAO's label, background score map (and CRF label) of a few training images, by dataset
    index: a second pass over just these, so the pass over every image keeps no maps, and the
    images can be picked with the sweep that pass computes."""
    dataset = ImageLabelDataset(manifest, "train")
    rows = {}
    for index, maps, labels in _multiscale(bao_net, dataset, _subset_loader(dataset, indices), device=device, cfg=cfg, with_am=True,
                                           desc="BAO gallery", runtime=runtime or RuntimeConfig()):
        scores = label_scores(maps, labels, cfg)
        rows[index] = {"bao": scores_to_labels(scores), "background": scores[0].cpu().numpy()}
        if crf.enabled:
            image = load_image(manifest.resolve(dataset.rows.at[index, "image_path"]))
            rows[index]["bao_crf"] = crf_refine(image, rows[index]["bao"], _present_classes(labels), crf)
    return rows


def baseline_labels(
    cam_net: nn.Module, manifest: Manifest, cfg: PseudoLabelConfig, device: torch.device, *, indices, threshold: float, runtime: RuntimeConfig | None = None
) -> dict[int, np.ndarray]:
    """The CAM baseline's pseudo-labels at one t for a few training images (for the gallery), with
    the stage's runtime settings (AMP, channels_last) so they match what the sweep scored."""
    dataset = ImageLabelDataset(manifest, "train")
    labels_by_index = {}
    for index, maps, labels in _multiscale(cam_net, dataset, _subset_loader(dataset, indices), device=device, cfg=cfg, with_am=False, desc="baseline gallery", runtime=runtime or RuntimeConfig()):
        labels_by_index[index] = threshold_pseudo_labels(max_normalized_cams(maps["cams"], labels), [threshold])[0]
    return labels_by_index


def gallery_rows(
    cam_net: nn.Module, manifest: Manifest, cfg: PseudoLabelConfig, device: torch.device, *, bao: dict[int, dict], threshold: float,
    runtime: RuntimeConfig | None = None, sweep: dict | None = None,
) -> list[dict]:
    """Everything a gallery row shows: image, ground truth, the baseline at ``threshold``, BAO's maps,
    and the image's own best t when ``sweep`` has it. Rows keep the order of ``bao``."""
    dataset = ImageLabelDataset(manifest, "train")
    baseline = baseline_labels(cam_net, manifest, cfg, device, indices=bao, threshold=threshold, runtime=runtime)
    by_image = ((sweep or {}).get("per_image_best_t") or {}).get("by_image") or {}
    rows = []
    for index, maps in bao.items():
        image = load_image(manifest.resolve(dataset.rows.at[index, "image_path"]))
        image_id = dataset.image_id(index)
        rows.append({"image_id": image_id, "image": image, "gt": _gt_mask(dataset, index), "baseline": baseline[index],
                     "best_t": by_image.get(image_id), **maps})
    return rows
