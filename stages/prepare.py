"""Stage 1: the dataset manifest (and, for the synthetic demo, the images themselves)."""

from bao.data.prepare import prepare_dataset
from bao.io import write_json
from bao.stage import log, start_stage

OUT_DIR = "data/prepared"
METRICS = "metrics/prepare.json"


def main() -> None:
    params, _ = start_stage("prepare")
    summary = prepare_dataset(params.data, params.seed, OUT_DIR)
    write_json(METRICS, summary)
    log.info("%s", summary["num_images"])


if __name__ == "__main__":
    main()
