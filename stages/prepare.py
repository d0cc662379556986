"""Stage 1: the dataset manifest (and, for the synthetic demo, the images themselves)."""

from bao.data.prepare import prepare_dataset
from bao.distributed import launch_rank
from bao.stage import log, stage_parser, start_stage


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--out", required=True, help="prepared dataset directory")
    parser.add_argument("--metrics", required=True, help="dataset counts (JSON)")
    args = parser.parse_args(argv)
    if launch_rank() != 0:  # under torchrun one process prepares; the others have nothing to do
        return
    params, runtime, _ = start_stage("prepare", args.params, args.runtime, distributed=False)
    summary = prepare_dataset(params.data, args.out, workers=runtime.io_threads, summary_path=args.metrics)
    log.info("%s", summary["num_images"])


if __name__ == "__main__":
    main()
