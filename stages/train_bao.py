"""Stage 3: train BAO's background-aware activation map (teacher/student, balanced loss)."""

from bao.stage import run_training_stage, training_stage_parser
from bao.train.bao import train_bao_net


def main(argv: list[str] | None = None) -> None:
    parser = training_stage_parser(__doc__)
    parser.add_argument("--cam-model", required=True, help="the trained CAM network (BAO's starting point)")
    args = parser.parse_args(argv)
    run_training_stage("train_bao", args, lambda params, runtime, manifest, device, live, checkpoints: train_bao_net(
        manifest, params.model, params.bao, args.cam_model, device, params.seed, live, checkpoints, runtime))


if __name__ == "__main__":
    main()
