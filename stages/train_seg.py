"""Stage 5: train DeepLabV3 on BAO's pseudo-labels."""

from bao.data.manifest import read_manifest
from bao.distributed import is_main_process
from bao.stage import open_live, resume_dir, start_stage
from bao.train.common import save_model
from bao.train.seg import train_segmentation_net

MANIFEST_DIR = "data/prepared"
PSEUDO_LABELS = "results/pseudo_labels"
CHECKPOINT = "models/deeplab.pt"
LIVE_DIR = "dvclive/train_seg"


def main() -> None:
    params, device = start_stage("train_seg")
    manifest = read_manifest(MANIFEST_DIR)
    with resume_dir("train_seg") as checkpoints, open_live(LIVE_DIR) as live:
        model, metrics = train_segmentation_net(manifest, PSEUDO_LABELS, params.train_seg, device, params.seed, live, checkpoints, params.runtime)
        if is_main_process():
            save_model(CHECKPOINT, model, {"classes": list(manifest.classes), "seed": params.seed})
        for name, value in metrics.items():
            live.summary[name] = value


if __name__ == "__main__":
    main()
