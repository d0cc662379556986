"""Stage 4: BAO's threshold-free pseudo-labels and, from the same pass, the conventional baseline
beside them (CAM pseudo-labels swept over the background threshold t, and saved at
train_seg.threshold), compared, with figures."""

from pathlib import Path

from bao.data.manifest import read_manifest
from bao.distributed import is_main_process, shared_atomic_outputs
from bao.infer.pipeline import bao_gallery, bao_pseudo_labels, class_names_with_background, gallery_indices, gallery_rows
from bao.infer.report import comparison_metrics, crf_metrics, log_sweep, per_class_rows, per_image_plot_rows, sweep_plot_rows
from bao.io import write_csv, write_json
from bao.metrics import headline_first
from bao.models import create_bao_net, create_cam_net
from bao.plots import save_gallery
from bao.stage import log, stage_parser, start_stage
from bao.train.common import load_model_state

GALLERY_T_WITHOUT_MASKS = 0.5
HEADLINE = ("pseudo_miou_bao", "baseline_best_miou", "pseudo_miou_bao_crf", "baseline_best_t")


def parse_args(argv: list[str] | None):
    parser = stage_parser(__doc__)
    for flag, text in [("--prepared", "prepared dataset directory"), ("--cam-model", "the trained CAM network"),
                       ("--bao-model", "the trained BAO network"), ("--sweep", "the baseline's mIoU per threshold (JSON)"),
                       ("--per-image-plot", "how many images pick each t as their own best (CSV)"),
                       ("--threshold-labels", "directory of the CAM pseudo-label PNGs at train_seg.threshold"),
                       ("--out", "directory of BAO's pseudo-label PNGs"), ("--per-class", "directory of per-class IoU CSVs"),
                       ("--sweep-plot", "sweep vs BAO (CSV)"), ("--gallery", "gallery figure (PNG)"), ("--metrics", "metrics (JSON)")]:
        parser.add_argument(flag, required=True, help=text)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    params, runtime, device = start_stage("pseudo_label", args.params, args.runtime)
    manifest = read_manifest(args.prepared)
    bao_net = create_bao_net(params.model.without_initial_weights(), manifest.num_classes, use_label_encoder=params.bao.label_encoder)
    load_model_state(args.bao_model, bao_net, manifest.classes)
    cam_net = create_cam_net(params.model.without_initial_weights(), manifest.num_classes)
    load_model_state(args.cam_model, cam_net, manifest.classes)
    bao_net, cam_net = bao_net.to(device), cam_net.to(device)
    names = class_names_with_background(manifest)
    # every output is staged and committed as one unit (bao.io.atomic_outputs): a failure or a kill leaves the
    # previous outputs as they were; under torchrun every process writes its shard's PNGs, rank 0 the rest
    outputs = (args.threshold_labels, args.sweep, args.per_image_plot, args.out, args.per_class, args.sweep_plot, args.gallery, args.metrics)
    with shared_atomic_outputs(*outputs) as (threshold_dir, sweep_json, per_image_plot, labels_dir, per_class_dir, sweep_plot, gallery_png,
                                             metrics_json):
        threshold_dir.mkdir(exist_ok=True)
        labels_dir.mkdir(exist_ok=True)
        results = bao_pseudo_labels(
            bao_net, manifest, params.pseudo_label, crf=params.crf, device=device, out_dir=labels_dir, runtime=runtime, cam_net=cam_net,
            sweep=True, threshold_labels_out=threshold_dir, label_threshold=params.train_seg.threshold,
        )
        sweep = results["sweep"]
        if is_main_process():
            metrics = {
                **comparison_metrics(results["bao"], sweep), **crf_metrics(results["bao"], results["bao_crf"]),
                "diagnosis": results["diagnosis"], "alignment": results["alignment"],
            }
            # gallery: the images whose own best t lies farthest from the sweep's, lowest own best t first (first images without masks)
            picked = gallery_indices(manifest, sweep, params.report.gallery_size)
            shown = picked if picked is not None else range(min(params.report.gallery_size, len(manifest.split("train"))))
            bao_rows = bao_gallery(bao_net, manifest, params.pseudo_label, params.crf, device=device, indices=shown, runtime=runtime)
            oracle = sweep["best_threshold"] is not None  # no training masks: no oracle t, show the middle one
            gallery_t = sweep["best_threshold"] if oracle else GALLERY_T_WITHOUT_MASKS
            rows = gallery_rows(cam_net, manifest, params.pseudo_label, device, bao=bao_rows, threshold=gallery_t,
                                runtime=runtime, sweep=sweep)
            save_gallery(gallery_png, rows, gallery_t, oracle)
            write_csv(per_image_plot, per_image_plot_rows(sweep))
            write_json(sweep_json, sweep)
            write_csv(sweep_plot, sweep_plot_rows(sweep, results["bao"]))
            write_csv(Path(per_class_dir) / "bao.csv", per_class_rows(results["bao"], names))
            write_csv(Path(per_class_dir) / "baseline_best_t.csv", per_class_rows(sweep["best"], names))
            write_json(metrics_json, headline_first(metrics, HEADLINE))
    if is_main_process():
        log_sweep(sweep)
        log.info("BAO mIoU=%s (CRF: %s); baseline best t=%s mIoU=%s", metrics.get("pseudo_miou_bao"),
                 metrics.get("pseudo_miou_bao_crf"), metrics["baseline_best_t"], metrics["baseline_best_miou"])


if __name__ == "__main__":
    main()
