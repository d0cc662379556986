"""Stage 5: train DeepLabV3 on pseudo-labels: BAO's, or the CAM baseline's at one t (train_seg.labels)."""

from bao.stage import run_training_stage, training_stage_parser
from bao.train.seg import train_segmentation_net, training_labels_dir


def main(argv: list[str] | None = None) -> None:
    parser = training_stage_parser(__doc__)
    parser.add_argument("--pseudo-labels", required=True, help="directory of BAO's pseudo-label PNGs")
    parser.add_argument("--threshold-labels", required=True, help="directory of the CAM baseline's pseudo-label PNGs at train_seg.threshold")
    parser.add_argument("--cam-model", required=True, help="the trained CAM network (read for train_seg.encoder_init: cam_network)")
    args = parser.parse_args(argv)
    run_training_stage("train_seg", args, lambda run: train_segmentation_net(
        run.manifest, training_labels_dir(run.params.train_seg, bao=args.pseudo_labels, threshold=args.threshold_labels),
        run.params.train_seg, cam_checkpoint=args.cam_model, model_cfg=run.params.model, **run.loop_options()))


if __name__ == "__main__":
    main()
