"""Stage 6: segmentation mIoU on the val split, and pseudo-label mIoU on train, against real masks."""

from pathlib import Path

from bao.data.manifest import read_manifest
from bao.distributed import barrier, is_main_process, shared_atomic_dir
from bao.infer.segment import evaluation_metrics, predict_split, score_predictions
from bao.io import write_json
from bao.models import create_deeplab
from bao.stage import log, start_stage
from bao.train.common import load_model_state

MANIFEST_DIR = "data/prepared"
PSEUDO_LABELS = "results/pseudo_labels"
CHECKPOINT = "models/deeplab.pt"
PREDICTIONS = "results/val_predictions"
METRICS = "metrics/evaluate.json"


def main() -> None:
    params, device = start_stage("evaluate")
    manifest = read_manifest(MANIFEST_DIR)
    seg = params.train_seg
    model = create_deeplab(seg.backbone, manifest.num_classes + 1, False, seg.output_stride)
    load_model_state(CHECKPOINT, model, manifest.classes)
    # scored in the staging directory: a failure leaves the previous predictions and metrics as they were;
    # under torchrun every process predicts its shard into it and rank 0 scores them all
    with shared_atomic_dir(PREDICTIONS) as staging:
        predict_split(
            model.to(device), manifest, "val", Path(staging), device=device, num_workers=params.evaluate.num_workers, runtime=params.runtime
        )
        barrier()
        if is_main_process():
            val = score_predictions(manifest, "val", Path(staging), params.evaluate.num_workers or None)
            pseudo = score_predictions(manifest, "train", Path(PSEUDO_LABELS), params.evaluate.num_workers or None)
    if not is_main_process():
        return
    metrics = evaluation_metrics(val, pseudo)
    write_json(METRICS, metrics)
    log.info("val mIoU=%s, pseudo-label mIoU=%s", metrics["val_miou"], metrics["pseudo_label_miou"])


if __name__ == "__main__":
    main()
