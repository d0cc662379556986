"""Stage 4a: the conventional baseline, CAM pseudo-labels swept over the background threshold t (and saved at train_seg.threshold)."""

from bao.data.manifest import read_manifest
from bao.distributed import is_main_process, shared_atomic_outputs
from bao.infer.pipeline import threshold_sweep
from bao.infer.report import per_image_plot_rows
from bao.io import write_csv, write_json
from bao.models import create_cam_net
from bao.stage import log, stage_parser, start_stage
from bao.train.common import load_model_state


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--prepared", required=True, help="prepared dataset directory")
    parser.add_argument("--cam-model", required=True, help="the trained CAM network")
    parser.add_argument("--sweep", required=True, help="the sweep's mIoU per threshold (JSON)")
    parser.add_argument("--per-image-plot", required=True, help="how many images pick each t as their own best (CSV)")
    parser.add_argument("--labels", required=True, help="directory of the CAM pseudo-label PNGs at train_seg.threshold")
    args = parser.parse_args(argv)
    params, runtime, device = start_stage("threshold_baseline", args.params, args.runtime)
    manifest = read_manifest(args.prepared)
    cam_net = create_cam_net(params.model.without_initial_weights(), manifest.num_classes)
    load_model_state(args.cam_model, cam_net, manifest.classes)
    # the labels, plot and sweep commit as one unit; under torchrun every process writes its shard's PNGs
    with shared_atomic_outputs(args.labels, args.per_image_plot, args.sweep) as (labels_dir, per_image_plot, sweep_json):
        labels_dir.mkdir(exist_ok=True)
        sweep = threshold_sweep(cam_net.to(device), manifest, params.pseudo_label, device, runtime=runtime,
                                labels_out=labels_dir, label_threshold=params.train_seg.threshold)
        if is_main_process():
            write_csv(per_image_plot, per_image_plot_rows(sweep))
            write_json(sweep_json, sweep)
    if not is_main_process():
        return
    if sweep["best"] is None:
        log.warning("no training image has a ground-truth mask: the sweep has no mIoU to report")
    else:
        log.info("best t=%.2f mIoU=%.4f (oracle: t chosen with ground truth)", sweep["best_threshold"], sweep["best"]["miou"])
        per_image = sweep["per_image_best_t"]
        log.info("per-image best t: mean %.3f std %.3f p10 %.2f p90 %.2f; per-image oracle mIoU %.4f",
                 per_image["mean"], per_image["std"], per_image["p10"], per_image["p90"], per_image["oracle_miou"])


if __name__ == "__main__":
    main()
