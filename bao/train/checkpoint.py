"""Resume checkpoints: an interrupted training stage, rerun, continues where it stopped.

The checkpoint lives in the stage's ``--resume`` directory (``checkpoints/<stage>/`` in dvc.yaml),
which is not a DVC output (``dvc repro`` deletes outputs before it runs a stage) and is ignored by git. It holds everything the loop changes:
weights, optimizer, scheduler, grad scaler, hook states (EMA teacher, logged metrics), the
python/numpy/torch RNG states and the shuffle generators' states at the start of the epoch, for
every process of a ``torchrun`` group (each rank augments with its own seed, ``seed + rank``).
A fingerprint of the stage's params, dataset manifest, input files and code is stored with it;
a checkpoint whose fingerprint differs is ignored, so changed params never resume stale work.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel

from bao.data.manifest import Manifest
from bao.distributed import gather_objects, get_rank, get_world_size, is_main_process
from bao.io import CheckpointError, load_torch, save_torch
from bao.models.backbones import load_state_strict
from bao.train.engine import Hook, LoopState, TrainingRun

log = logging.getLogger("bao")

RESUME_FILE = "resume.pt"
FORMAT = 2  # 2: RNG states per rank
CODE_DIR = Path(__file__).resolve().parents[1]


class CheckpointHook(Hook):
    """Saves a resume checkpoint every ``every`` optimizer steps (0: never mid-epoch) and at each
    epoch end; before training, restores a matching one. The last good file is only ever replaced
    atomically, and a step whose loss is not finite stops the loop before this hook runs."""

    def __init__(self, directory: str | Path, fingerprint: str, every: int):
        self.path = Path(directory) / RESUME_FILE
        self.fingerprint = fingerprint
        self.every = every
        self.run: TrainingRun | None = None
        self.epoch_start_rng: dict[str, torch.Tensor] = {}

    def before_train(self, run: TrainingRun, state: LoopState) -> None:
        self.run = run
        checkpoint = read_resume_checkpoint(self.path, self.fingerprint)
        if checkpoint is not None:
            restore_training_state(checkpoint, run, state, self.path)
            log.info("resumed from %s at epoch %d, batch %d (step %d)", self.path, state.epoch, state.start_batch, state.step)

    def before_epoch(self, state: LoopState) -> None:
        self.epoch_start_rng = loader_rng_state(self.run.loader)

    def after_step(self, state: LoopState, losses: dict[str, float]) -> None:
        last_batch = state.step_in_epoch + 1 == state.iters_per_epoch  # the epoch-end save follows
        if self.every and state.step % self.every == 0 and not last_batch:
            self.save(state, epoch_finished=False)

    def after_epoch(self, state: LoopState, epoch_losses: dict[str, float]) -> None:
        self.save(state, epoch_finished=True)

    def save(self, state: LoopState, epoch_finished: bool) -> None:
        """Every process hands its RNG states to rank 0, which writes the one file (under torchrun
        the processes hold the same weights, but each draws its own augmentations)."""
        ranks = gather_objects(rank_rng_state(self.run, self, epoch_finished))
        if not is_main_process():
            return
        save_torch(self.path, capture_training_state(self.run, state, self, epoch_finished, ranks=ranks))


def rank_rng_state(run: TrainingRun, owner: CheckpointHook, epoch_finished: bool) -> dict:
    """This process's RNG states: the global generators now, and the shuffle generators at the
    start of the epoch a resume runs (this one, or the next)."""
    return {
        "rng": rng_state(),
        "epoch_start_rng": loader_rng_state(run.loader) if epoch_finished else dict(owner.epoch_start_rng),
    }


def capture_training_state(
    run: TrainingRun, state: LoopState, owner: CheckpointHook, epoch_finished: bool, *, ranks: list[dict] | None = None
) -> dict:
    """A plain dict (tensors and plain values) of everything needed to continue the run exactly;
    ``ranks``: every process's ``rank_rng_state`` (default: this process's alone)."""
    return {
        "format": FORMAT,
        "fingerprint": owner.fingerprint,
        "epoch": state.epoch,
        "epoch_finished": epoch_finished,
        "batches_done": state.step_in_epoch + 1,
        "step": state.step,
        "last_finite_loss": state.last_finite_loss,
        "history": list(state.history),
        "totals": dict(state.totals),
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict() if run.scheduler is not None else None,
        "scaler": run.scaler.state_dict(),
        "hooks": [hook.state_dict() for hook in run.hooks if hook is not owner],
        "ranks": ranks if ranks is not None else [rank_rng_state(run, owner, epoch_finished)],
    }


def restore_training_state(checkpoint: dict, run: TrainingRun, state: LoopState, path: Path) -> None:
    """Put the run back where ``capture_training_state`` left it (the one place that restores)."""
    load_state_strict(run.model, checkpoint["model"], path)
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    if run.scheduler is not None:
        run.scheduler.load_state_dict(checkpoint["scheduler"])
    run.scaler.load_state_dict(checkpoint["scaler"])
    others = [hook for hook in run.hooks if not isinstance(hook, CheckpointHook)]
    if len(others) != len(checkpoint["hooks"]):
        raise CheckpointError(f"{path}: saved by a run with {len(checkpoint['hooks'])} hooks, this one has {len(others)}")
    for hook, hook_state in zip(others, checkpoint["hooks"]):
        hook.load_state_dict(hook_state)
    state.step = checkpoint["step"]
    state.last_finite_loss = checkpoint["last_finite_loss"]
    state.history = list(checkpoint["history"])
    if checkpoint["epoch_finished"]:
        state.epoch, state.start_batch, state.totals = checkpoint["epoch"] + 1, 0, {}
    else:
        state.epoch, state.start_batch, state.totals = checkpoint["epoch"], checkpoint["batches_done"], dict(checkpoint["totals"])
    ranks = checkpoint["ranks"]
    if len(ranks) != get_world_size():
        raise CheckpointError(f"{path}: saved by {len(ranks)} process(es), this run has {get_world_size()}; "
                              "rerun with as many, or delete it to train from the start")
    set_loader_rng_state(run.loader, ranks[get_rank()]["epoch_start_rng"])
    set_rng_state(ranks[get_rank()]["rng"])


def read_resume_checkpoint(path: Path, fingerprint: str) -> dict | None:
    """The checkpoint at ``path`` if it belongs to this exact run; None if absent or stale."""
    if not path.is_file():
        return None
    try:
        checkpoint = load_torch(path)
    except CheckpointError as error:
        raise CheckpointError(f"{error}; delete {path} to train from the start") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a resume checkpoint of this version; delete it to train from the start")
    if checkpoint.get("fingerprint") != fingerprint:
        log.warning("ignoring %s: written with other params, data or code; training from the start", path)
        return None
    return checkpoint


def rng_state() -> dict:
    """python, numpy and torch (CPU, CUDA) global RNG states, in types ``weights_only`` loads."""
    numpy_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    np.random.set_state({
        "bit_generator": "MT19937",
        "state": {"key": numpy_state["key"].numpy().astype(np.uint32), "pos": numpy_state["pos"]},
        "has_gauss": numpy_state["has_gauss"],
        "gauss": numpy_state["gauss"],
    })
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _loader_generators(loader) -> dict[str, torch.Generator]:
    """The shuffle generator (its state fixes the epoch's order) and the loader's (worker seeds)."""
    sampler = getattr(getattr(loader, "batch_sampler", None), "sampler", None)
    generators = {"sampler": getattr(sampler, "generator", None), "loader": getattr(loader, "generator", None)}
    return {name: generator for name, generator in generators.items() if generator is not None}


def loader_rng_state(loader) -> dict[str, torch.Tensor]:
    return {name: generator.get_state() for name, generator in _loader_generators(loader).items()}


def set_loader_rng_state(loader, state: dict[str, torch.Tensor]) -> None:
    for name, generator in _loader_generators(loader).items():
        if name in state:
            generator.set_state(state[name])


def run_fingerprint(configs: Sequence[BaseModel], seed: int, manifest: Manifest, inputs: Iterable[str | Path | None] = ()) -> str:
    """Hash of what decides a training run: params, dataset manifest, input files and bao's code."""
    digest = hashlib.sha256()
    params = {"seed": seed, "configs": [config.model_dump(mode="json") for config in configs]}
    digest.update(json.dumps(params, sort_keys=True).encode())
    digest.update(json.dumps(list(manifest.classes)).encode())
    digest.update(manifest.table.to_json(orient="split").encode())
    for path in [*(Path(p) for p in inputs if p), *sorted(CODE_DIR.rglob("*.py"))]:
        _hash_path(digest, path)
    return digest.hexdigest()


def _hash_path(digest, path: Path) -> None:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        digest.update(file.read_bytes())


def resume_hook(directory: str | Path | None, every: int, fingerprint: str) -> CheckpointHook | None:
    """No directory, no checkpoints (library use and tests that do not resume)."""
    return CheckpointHook(directory, fingerprint, every) if directory is not None else None
