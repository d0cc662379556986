"""Stage 4b: BAO's threshold-free pseudo-labels, compared with the threshold sweep."""

from pathlib import Path

from bao.data.manifest import read_manifest
from bao.infer.pipeline import bao_pseudo_labels
from bao.infer.report import comparison_metrics, sweep_plot_rows
from bao.io import atomic_dir, read_json, write_csv, write_json
from bao.models import create_bao_net
from bao.stage import log, start_stage
from bao.train.common import load_model_state

MANIFEST_DIR = "data/prepared"
BAO_CHECKPOINT = "models/bao.pt"
SWEEP = "results/threshold_sweep.json"
PSEUDO_LABELS = "results/pseudo_labels"
METRICS = "metrics/pseudo_label.json"
PLOT = "plots/threshold_sweep.csv"


def main() -> None:
    params, device = start_stage("pseudo_label")
    manifest = read_manifest(MANIFEST_DIR)
    bao_net = create_bao_net(params.model, manifest.num_classes)
    load_model_state(BAO_CHECKPOINT, bao_net, manifest.classes)
    sweep = read_json(SWEEP)
    # metrics made before the PNGs move into place: a failure leaves every previous output as it was
    with atomic_dir(PSEUDO_LABELS) as staging:
        bao = bao_pseudo_labels(bao_net.to(device), manifest, params.pseudo_label, device, Path(staging))
        metrics = comparison_metrics(bao, sweep)
        rows = sweep_plot_rows(sweep, bao)
    write_csv(PLOT, rows)
    write_json(METRICS, metrics)
    log.info("BAO mIoU=%s; baseline best t=%s mIoU=%s", metrics.get("pseudo_miou_bao"), metrics["baseline_best_t"], metrics["baseline_best_miou"])


if __name__ == "__main__":
    main()
