"""Stage 5: train DeepLabV3 on BAO's pseudo-labels."""

from bao.stage import run_training_stage, training_stage_parser
from bao.train.seg import train_segmentation_net


def main(argv: list[str] | None = None) -> None:
    parser = training_stage_parser(__doc__)
    parser.add_argument("--pseudo-labels", required=True, help="directory of pseudo-label PNGs")
    args = parser.parse_args(argv)
    run_training_stage("train_seg", args, lambda run: train_segmentation_net(
        run.manifest, args.pseudo_labels, run.params.train_seg, **run.loop_options()))


if __name__ == "__main__":
    main()
