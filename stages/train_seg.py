"""Stage 5: train DeepLabV3 on BAO's pseudo-labels."""

from bao.stage import run_training_stage
from bao.train.seg import train_segmentation_net

PSEUDO_LABELS = "results/pseudo_labels"
CHECKPOINT = "models/deeplab.pt"


def main() -> None:
    run_training_stage("train_seg", CHECKPOINT, lambda params, manifest, device, live, checkpoints: train_segmentation_net(
        manifest, PSEUDO_LABELS, params.train_seg, device=device, seed=params.seed, live=live, resume_dir=checkpoints, runtime=params.runtime))


if __name__ == "__main__":
    main()
