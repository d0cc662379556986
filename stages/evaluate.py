"""Stage 6: segmentation mIoU on the val split, and the mIoU on train of the pseudo-labels it learned from, against real masks."""

from bao.data.manifest import read_manifest
from bao.distributed import barrier, is_main_process, shared_atomic_outputs
from bao.infer.segment import evaluation_metrics, predict_split, score_predictions
from bao.io import write_json
from bao.metrics import headline_first
from bao.models import create_deeplab
from bao.stage import log, stage_parser, start_stage
from bao.train.common import load_model_state
from bao.train.seg import training_labels_dir

HEADLINE = ("val_miou", "pseudo_label_miou")
GIVEN_LABELS = "given_labels"  # subdirectory of the val predictions made with each image's labels given


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(__doc__)
    for flag, text in [("--prepared", "prepared dataset directory"), ("--pseudo-labels", "directory of BAO's pseudo-label PNGs"),
                       ("--threshold-labels", "directory of the CAM baseline's pseudo-label PNGs at train_seg.threshold"),
                       ("--model", "the trained segmentation network"), ("--out", "directory of val prediction PNGs"),
                       ("--metrics", "metrics (JSON)")]:
        parser.add_argument(flag, required=True, help=text)
    args = parser.parse_args(argv)
    params, runtime, device = start_stage("evaluate", args.params, args.runtime)
    manifest = read_manifest(args.prepared)
    seg = params.train_seg
    model = create_deeplab(seg.backbone, manifest.num_classes + 1, False, seg.output_stride)
    load_model_state(args.model, model, manifest.classes)
    # predictions and metrics commit as one unit: a failure leaves the previous ones as they were;
    # under torchrun every process predicts its shard into the staging directory, then scores its
    # share of both splits; the counts are summed and rank 0 writes the metrics
    with shared_atomic_outputs(args.out, args.metrics) as (predictions, metrics_json):
        (predictions / GIVEN_LABELS).mkdir(parents=True, exist_ok=True)
        predict_split(
            model.to(device), manifest, "val", predictions, device=device, num_workers=runtime.loader_workers, runtime=runtime,
            long_side=seg.eval_long_side(), given_labels_dir=predictions / GIVEN_LABELS,
        )
        barrier()
        val = score_predictions(manifest, "val", predictions, runtime.io_threads)
        val_given_labels = score_predictions(manifest, "val", predictions / GIVEN_LABELS, runtime.io_threads)
        labels_dir = training_labels_dir(seg, bao=args.pseudo_labels, threshold=args.threshold_labels)
        pseudo = score_predictions(manifest, "train", labels_dir, runtime.io_threads)
        metrics = {**evaluation_metrics(val, pseudo, val_given_labels), "train_seg_labels": seg.labels}
        if is_main_process():
            write_json(metrics_json, headline_first(metrics, HEADLINE))
    if is_main_process():
        log.info("val mIoU=%s, pseudo-label mIoU=%s", metrics["val_miou"], metrics["pseudo_label_miou"])


if __name__ == "__main__":
    main()
