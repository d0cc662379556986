"""What every stage script does first: read params, pick the device, seed, open DVCLive."""

from __future__ import annotations

import atexit
import contextlib
import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from bao.config import Params, load_params
from bao.distributed import get_rank, get_world_size, init_distributed, is_main_process, leave_process_group
from bao.io import atomic_dir
from bao.runtime import resolve_device, seed_everything

MANIFEST_DIR = "data/prepared"
# (params, manifest, device, live, resume directory) -> (trained model, final metrics)
TrainFn = Callable[..., tuple[torch.nn.Module, dict[str, float]]]

log = logging.getLogger("bao")
CHECKPOINT_ROOT = "checkpoints"


def start_stage(name: str, params_file: str = "params.yaml") -> tuple[Params, torch.device]:
    """Also joins the process group when launched by ``torchrun`` (then only rank 0 logs INFO)."""
    params = load_params(params_file)
    device = resolve_device(params.device)
    if init_distributed(device.type):
        atexit.register(leave_process_group)
    level = logging.INFO if is_main_process() else logging.WARNING
    logging.basicConfig(level=level, format=f"[{name}{f' rank {get_rank()}' if get_world_size() > 1 else ''}] %(message)s")
    seed_everything(params.seed)
    log.info("device=%s seed=%d processes=%d", device, params.seed, get_world_size())
    return params, device


class NullLive:
    """What processes other than rank 0 log to: nothing (only rank 0 writes files)."""

    def __init__(self):
        self.summary: dict = {}

    def log_metric(self, *args, **kwargs) -> None: ...

    def next_step(self) -> None: ...


@contextlib.contextmanager
def open_live(directory: str | Path) -> Iterator:
    """A DVCLive logger that leaves dvc.yaml alone (plots are declared there by hand); rank 0 only.

    It writes into a temporary directory that replaces ``directory`` only when the block ends
    without error, so a failed run never leaves partial metrics or plots behind.
    """
    if not is_main_process():
        yield NullLive()
        return
    from dvclive import Live

    with atomic_dir(directory) as staging, Live(str(staging), save_dvc_exp=False, dvcyaml=False) as live:
        yield live


@contextlib.contextmanager
def resume_dir(stage: str) -> Iterator[Path]:
    """``checkpoints/<stage>``: where an interrupted run's resume checkpoint waits for the rerun.

    Not a DVC output (``dvc repro`` deletes outputs before running a stage), ignored by git;
    removed once the block (training and writing every output) has succeeded.
    """
    directory = Path(CHECKPOINT_ROOT) / stage
    yield directory
    if not is_main_process():
        return
    shutil.rmtree(directory, ignore_errors=True)
    with contextlib.suppress(OSError):
        directory.parent.rmdir()  # only if no other stage's checkpoint is waiting there


def run_training_stage(name: str, checkpoint: str | Path, train: TrainFn) -> None:
    """The shape every training stage shares: params, manifest, resume directory and DVCLive
    around ``train``, then the model saved by the main process and its metrics logged."""
    from bao.data.manifest import read_manifest
    from bao.train.common import save_model

    params, device = start_stage(name)
    manifest = read_manifest(MANIFEST_DIR)
    with resume_dir(name) as checkpoints, open_live(Path("dvclive") / name) as live:
        model, metrics = train(params, manifest, device, live, checkpoints)
        if is_main_process():
            save_model(checkpoint, model, {"classes": list(manifest.classes), "seed": params.seed})
        for metric, value in metrics.items():
            live.summary[metric] = value
