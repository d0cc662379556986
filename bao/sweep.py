"""The CAM threshold baseline alone, outside the pipeline: a CAM network's pseudo-labels swept over
the background threshold t (and, with ``--labels``, saved at train_seg.threshold). The pipeline's
pseudo_label stage computes the same sweep within BAO's pass; this needs no BAO network, e.g. to
measure how much the best t varies on a dataset (docs/demo.md):

    python -m bao.sweep --params P --prepared DIR --cam-model M --sweep sweep.json --per-image-plot best_t.csv [--labels DIR]
"""

from bao.data.manifest import read_manifest
from bao.distributed import is_main_process, shared_atomic_outputs
from bao.infer.pipeline import threshold_sweep
from bao.infer.report import log_sweep, per_image_plot_rows
from bao.io import write_csv, write_json
from bao.models import create_cam_net
from bao.stage import stage_parser, start_stage
from bao.train.common import load_model_state


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--prepared", required=True, help="prepared dataset directory")
    parser.add_argument("--cam-model", required=True, help="the trained CAM network")
    parser.add_argument("--sweep", required=True, help="the sweep's mIoU per threshold (JSON)")
    parser.add_argument("--per-image-plot", required=True, help="how many images pick each t as their own best (CSV)")
    parser.add_argument("--labels", default=None, help="directory of the CAM pseudo-label PNGs at train_seg.threshold (default: not saved)")
    args = parser.parse_args(argv)
    params, runtime, device = start_stage("sweep", args.params, args.runtime)
    manifest = read_manifest(args.prepared)
    cam_net = create_cam_net(params.model.without_initial_weights(), manifest.num_classes)
    load_model_state(args.cam_model, cam_net, manifest.classes)
    # the labels, plot and sweep commit as one unit; under torchrun every process writes its shard's PNGs
    outputs = (args.per_image_plot, args.sweep, *([args.labels] if args.labels else []))
    with shared_atomic_outputs(*outputs) as (per_image_plot, sweep_json, *labels_dir):
        if labels_dir:
            labels_dir[0].mkdir(exist_ok=True)
        sweep = threshold_sweep(cam_net.to(device), manifest, params.pseudo_label, device, runtime=runtime,
                                labels_out=labels_dir[0] if labels_dir else None, label_threshold=params.train_seg.threshold)
        if is_main_process():
            write_csv(per_image_plot, per_image_plot_rows(sweep))
            write_json(sweep_json, sweep)
    if is_main_process():
        log_sweep(sweep)


if __name__ == "__main__":
    main()
