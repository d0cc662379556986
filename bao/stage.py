"""What every stage script does first: read params, pick the device, seed, open DVCLive."""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch

from bao.config import Params, load_params
from bao.io import atomic_dir
from bao.runtime import resolve_device, seed_everything

log = logging.getLogger("bao")
CHECKPOINT_ROOT = "checkpoints"


def start_stage(name: str, params_file: str = "params.yaml") -> tuple[Params, torch.device]:
    logging.basicConfig(level=logging.INFO, format=f"[{name}] %(message)s")
    params = load_params(params_file)
    device = resolve_device(params.device)
    seed_everything(params.seed)
    log.info("device=%s seed=%d", device, params.seed)
    return params, device


@contextlib.contextmanager
def open_live(directory: str | Path) -> Iterator:
    """A DVCLive logger that leaves dvc.yaml alone (plots are declared there by hand).

    It writes into a temporary directory that replaces ``directory`` only when the block ends
    without error, so a failed run never leaves partial metrics or plots behind.
    """
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
    shutil.rmtree(directory, ignore_errors=True)
    with contextlib.suppress(OSError):
        directory.parent.rmdir()  # only if no other stage's checkpoint is waiting there
