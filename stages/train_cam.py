"""Stage 2: train the CAM classifier on image-level labels."""

from bao.stage import run_training_stage, training_stage_parser
from bao.train.cam import train_cam_net


def main(argv: list[str] | None = None) -> None:
    args = training_stage_parser(__doc__).parse_args(argv)
    run_training_stage("train_cam", args, lambda run: train_cam_net(
        run.manifest, run.params.model, run.params.train_cam, **run.loop_options()))


if __name__ == "__main__":
    main()
