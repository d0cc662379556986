"""Stage 3: train BAO's background-aware activation map (teacher/student, balanced loss)."""

from bao.stage import run_training_stage
from bao.train.bao import train_bao_net

CAM_CHECKPOINT = "models/cam.pt"
CHECKPOINT = "models/bao.pt"


def main() -> None:
    run_training_stage("train_bao", CHECKPOINT, lambda params, manifest, device, live, checkpoints: train_bao_net(
        manifest, params.model, params.bao, CAM_CHECKPOINT, device=device, seed=params.seed, live=live, resume_dir=checkpoints, runtime=params.runtime))


if __name__ == "__main__":
    main()
