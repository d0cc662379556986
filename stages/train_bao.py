"""Stage 3: train BAO's background-aware activation map (teacher/student, balanced loss)."""

from bao.data.manifest import read_manifest
from bao.distributed import is_main_process
from bao.stage import open_live, resume_dir, start_stage
from bao.train.bao import train_bao_net
from bao.train.common import save_model

MANIFEST_DIR = "data/prepared"
CAM_CHECKPOINT = "models/cam.pt"
CHECKPOINT = "models/bao.pt"
LIVE_DIR = "dvclive/train_bao"


def main() -> None:
    params, device = start_stage("train_bao")
    manifest = read_manifest(MANIFEST_DIR)
    with resume_dir("train_bao") as checkpoints, open_live(LIVE_DIR) as live:
        model, metrics = train_bao_net(manifest, params.model, params.bao, CAM_CHECKPOINT, device, params.seed, live, checkpoints, params.runtime)
        if is_main_process():
            save_model(CHECKPOINT, model, {"classes": list(manifest.classes), "seed": params.seed})
        for name, value in metrics.items():
            live.summary[name] = value


if __name__ == "__main__":
    main()
