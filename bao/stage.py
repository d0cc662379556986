"""What every stage script does first: parse its paths, read params and runtime settings, pick
the device, seed, open DVCLive. Paths come from the stage's ``cmd`` in dvc.yaml, never from here."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from bao.config import PARAMS_FILE, RUNTIME_FILE, Params, RuntimeConfig, load_params, load_runtime
from bao.distributed import get_rank, get_world_size, init_distributed, is_main_process, leave_process_group
from bao.runtime import resolve_device, seed_everything

if TYPE_CHECKING:  # the manifest module imports pandas: only where a stage reads one
    from bao.data.manifest import Manifest


@dataclasses.dataclass(frozen=True)
class StageRun:
    """What ``run_training_stage`` hands a stage's training function."""

    params: Params
    runtime: RuntimeConfig
    manifest: Manifest
    device: torch.device
    live: object  # DVCLive's Live on rank 0, NullLive elsewhere
    resume_dir: Path

    def loop_options(self) -> dict:
        """The keyword arguments every ``train_*_net`` takes alike."""
        return {"device": self.device, "seed": self.params.seed, "live": self.live, "resume_dir": self.resume_dir, "runtime": self.runtime}


# a StageRun -> (trained model, final metrics)
TrainFn = Callable[[StageRun], tuple[torch.nn.Module, dict[str, float]]]

log = logging.getLogger("bao")


def stage_parser(description: str | None) -> argparse.ArgumentParser:
    """The options every stage takes; each stage adds its input and output paths (required, so
    dvc.yaml's ``cmd`` is the one place that names them)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default=PARAMS_FILE, help="results params (tracked by DVC)")
    parser.add_argument("--runtime", default=None, help=f"hardware settings (default: {RUNTIME_FILE} if present; see runtime.example.yaml)")
    return parser


def start_stage(
    name: str, params_file: str | Path = PARAMS_FILE, runtime_file: str | Path | None = None, *, distributed: bool = True
) -> tuple[Params, RuntimeConfig, torch.device]:
    """Also joins the process group when launched by ``torchrun`` (then only rank 0 logs INFO).

    ``runtime_file``: None reads runtime.yaml if there is one; a file named explicitly must exist.

    Every process seeds with ``seed + rank``: the ranks' augmentations differ (each rank's own
    random crops and flips), while the initial weights still agree because DDP broadcasts
    rank 0's at wrap time. A world of one is seeded with ``seed`` exactly.
    """
    params = load_params(params_file)
    runtime = load_runtime(RUNTIME_FILE) if runtime_file is None else load_runtime(runtime_file, must_exist=True)
    device = resolve_device(params.device)
    if distributed and init_distributed(device.type, runtime.dist_timeout_s):
        atexit.register(leave_process_group)
    level = logging.INFO if is_main_process() else logging.WARNING
    logging.basicConfig(level=level, format=f"[{name}{f' rank {get_rank()}' if get_world_size() > 1 else ''}] %(message)s")
    seed_everything(params.seed + get_rank())
    log.info("device=%s seed=%d processes=%d", device, params.seed, get_world_size())
    return params, runtime, device


class NullLive:
    """What processes other than rank 0 log to: nothing (only rank 0 writes files)."""

    def __init__(self):
        self.summary: dict = {}

    def log_metric(self, *args, **kwargs) -> None: ...

    def next_step(self) -> None: ...


@contextlib.contextmanager
def live_logger(directory: str | Path) -> Iterator:
    """DVCLive writing straight into ``directory`` (already a staging path); rank 0 only."""
    if not is_main_process():
        yield NullLive()
        return
    from dvclive import Live

    with Live(str(directory), save_dvc_exp=False, dvcyaml=False) as live:
        yield live


@contextlib.contextmanager
def resume_dir(directory: str | Path) -> Iterator[Path]:
    """Where an interrupted run's resume checkpoint waits for the rerun (``--resume`` in dvc.yaml).

    Not a DVC output (``dvc repro`` deletes outputs before running a stage), ignored by git;
    removed once the block (training and writing every output) has succeeded.
    """
    directory = Path(directory)
    yield directory
    if not is_main_process():
        return
    shutil.rmtree(directory, ignore_errors=True)
    with contextlib.suppress(OSError):
        directory.parent.rmdir()  # only if no other stage's checkpoint is waiting there


def training_stage_parser(description: str | None) -> argparse.ArgumentParser:
    """A training stage's paths: the prepared dataset in, the model and DVCLive directory out,
    and the resume-checkpoint directory."""
    parser = stage_parser(description)
    parser.add_argument("--prepared", required=True, help="prepared dataset directory (manifest)")
    parser.add_argument("--model-out", required=True, help="the trained model file")
    parser.add_argument("--live", required=True, help="DVCLive directory (metrics and loss curves)")
    parser.add_argument("--resume", required=True, help="resume checkpoints of an interrupted run (not a DVC output)")
    return parser


def run_training_stage(name: str, args: argparse.Namespace, train: TrainFn) -> None:
    """The shape every training stage shares: params, manifest, resume directory and DVCLive
    around ``train``, then the model saved by the main process and its metrics logged. The model
    and the DVCLive directory commit as one unit (``bao.io.atomic_outputs``)."""
    from bao.data.manifest import read_manifest
    from bao.distributed import shared_atomic_outputs
    from bao.train.common import save_model

    params, runtime, device = start_stage(name, args.params, args.runtime)
    manifest = read_manifest(args.prepared)
    with resume_dir(args.resume) as checkpoints, shared_atomic_outputs(args.model_out, args.live) as (model_file, live_dir):
        with live_logger(live_dir) as live:
            model, metrics = train(StageRun(params, runtime, manifest, device, live, checkpoints))
            if is_main_process():
                save_model(model_file, model, {"classes": list(manifest.classes), "seed": params.seed})
            for metric, value in metrics.items():
                live.summary[metric] = value
