"""Stage 3: train BAO's background-aware activation map (teacher/student, balanced loss)."""

from bao.stage import run_training_stage, training_stage_parser
from bao.train.bao import train_bao_net


def main(argv: list[str] | None = None) -> None:
    parser = training_stage_parser(__doc__)
    parser.add_argument("--cam-model", required=True, help="the trained CAM network (BAO's starting point)")
    args = parser.parse_args(argv)
    run_training_stage("train_bao", args, lambda run: train_bao_net(
        run.manifest, run.params.model, run.params.bao, args.cam_model, **run.loop_options()))


if __name__ == "__main__":
    main()
