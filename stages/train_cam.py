"""Stage 2: train the CAM classifier on image-level labels."""

from bao.stage import run_training_stage
from bao.train.cam import train_cam_net

CHECKPOINT = "models/cam.pt"


def main() -> None:
    run_training_stage("train_cam", CHECKPOINT, lambda params, manifest, device, live, checkpoints: train_cam_net(
        manifest, params.model, params.train_cam, device=device, seed=params.seed, live=live, resume_dir=checkpoints, runtime=params.runtime))


if __name__ == "__main__":
    main()
