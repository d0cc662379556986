"""Stage 5: train DeepLabV3 on BAO's pseudo-labels."""

from bao.stage import run_training_stage, training_stage_parser
from bao.train.seg import train_segmentation_net


def main(argv: list[str] | None = None) -> None:
    parser = training_stage_parser(__doc__)
    parser.add_argument("--pseudo-labels", required=True, help="directory of pseudo-label PNGs")
    args = parser.parse_args(argv)
    run_training_stage("train_seg", args, lambda params, runtime, manifest, device, live, checkpoints: train_segmentation_net(
        manifest, args.pseudo_labels, params.train_seg, device, params.seed, live, checkpoints, runtime))


if __name__ == "__main__":
    main()
