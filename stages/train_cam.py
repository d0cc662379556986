"""Stage 2: train the CAM classifier on image-level labels."""

from bao.data.manifest import read_manifest
from bao.distributed import is_main_process
from bao.stage import open_live, resume_dir, start_stage
from bao.train.cam import train_cam_net
from bao.train.common import save_model

MANIFEST_DIR = "data/prepared"
CHECKPOINT = "models/cam.pt"
LIVE_DIR = "dvclive/train_cam"


def main() -> None:
    params, device = start_stage("train_cam")
    manifest = read_manifest(MANIFEST_DIR)
    with resume_dir("train_cam") as checkpoints, open_live(LIVE_DIR) as live:
        model, metrics = train_cam_net(manifest, params.model, params.train_cam, device, params.seed, live, checkpoints, params.runtime)
        if is_main_process():
            save_model(CHECKPOINT, model, {"classes": list(manifest.classes), "seed": params.seed})
        for name, value in metrics.items():
            live.summary[name] = value


if __name__ == "__main__":
    main()
