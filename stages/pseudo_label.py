"""Stage 4b: BAO's threshold-free pseudo-labels, compared with the threshold sweep, and figures."""

from pathlib import Path

from bao.data.manifest import read_manifest
from bao.distributed import is_main_process, shared_atomic_dir
from bao.infer.pipeline import bao_pseudo_labels, class_names_with_background, gallery_rows
from bao.infer.report import comparison_metrics, crf_metrics, per_class_rows, sweep_plot_rows
from bao.io import read_json, write_csv, write_json
from bao.models import create_bao_net, create_cam_net
from bao.plots import save_gallery
from bao.stage import log, start_stage
from bao.train.common import load_model_state

MANIFEST_DIR = "data/prepared"
CAM_CHECKPOINT = "models/cam.pt"
BAO_CHECKPOINT = "models/bao.pt"
SWEEP = "results/threshold_sweep.json"
PSEUDO_LABELS = "results/pseudo_labels"
METRICS = "metrics/pseudo_label.json"
PLOT = "plots/threshold_sweep.csv"
PER_CLASS_BAO = "plots/per_class_iou/bao.csv"
PER_CLASS_BASELINE = "plots/per_class_iou/baseline_best_t.csv"
GALLERY = "results/gallery.png"
GALLERY_T_WITHOUT_MASKS = 0.5


def main() -> None:
    params, device = start_stage("pseudo_label")
    manifest = read_manifest(MANIFEST_DIR)
    bao_net = create_bao_net(params.model, manifest.num_classes, use_label_encoder=params.bao.label_encoder)
    load_model_state(BAO_CHECKPOINT, bao_net, manifest.classes)
    cam_net = create_cam_net(params.model.model_copy(update={"pretrained": False, "checkpoint": None}), manifest.num_classes)
    load_model_state(CAM_CHECKPOINT, cam_net, manifest.classes)
    sweep = read_json(SWEEP)
    names = class_names_with_background(manifest)
    # metrics and figures are made before the PNGs move into place: a failure leaves every previous output as it was;
    # under torchrun every process writes its shard's PNGs and rank 0 alone makes the metrics and figures
    with shared_atomic_dir(PSEUDO_LABELS) as staging:
        results, gallery = bao_pseudo_labels(
            bao_net.to(device), manifest, params.pseudo_label, crf=params.crf, device=device, out_dir=Path(staging),
            gallery_size=params.report.gallery_size, runtime=params.runtime,
        )
        if is_main_process():
            metrics = {**comparison_metrics(results["bao"], sweep), **crf_metrics(results["bao"], results["bao_crf"])}
            oracle = sweep["best_threshold"] is not None  # no training masks: no oracle t, show the middle one
            gallery_t = sweep["best_threshold"] if oracle else GALLERY_T_WITHOUT_MASKS
            rows = gallery_rows(cam_net.to(device), manifest, params.pseudo_label, device, bao=gallery, threshold=gallery_t)
            save_gallery(GALLERY, rows, gallery_t, oracle)
    if not is_main_process():
        return
    write_csv(PLOT, sweep_plot_rows(sweep, results["bao"]))
    write_csv(PER_CLASS_BAO, per_class_rows(results["bao"], names))
    write_csv(PER_CLASS_BASELINE, per_class_rows(sweep["best"], names))
    write_json(METRICS, metrics)
    log.info("BAO mIoU=%s (CRF: %s); baseline best t=%s mIoU=%s", metrics.get("pseudo_miou_bao"),
             metrics.get("pseudo_miou_bao_crf"), metrics["baseline_best_t"], metrics["baseline_best_miou"])


if __name__ == "__main__":
    main()
