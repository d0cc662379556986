"""Pieces every training stage shares: loaders, the DVCLive hook, checkpoints."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, RandomSampler, SequentialSampler

from bao.config import RuntimeConfig
from bao.distributed import get_rank, is_distributed, wrap_ddp
from bao.io import CheckpointError, load_torch, save_torch
from bao.models.backbones import load_state_strict
from bao.runtime import seed_worker
from bao.train.engine import Hook, LoopState, create_optimizer, create_scheduler


class ResumableBatchSampler(BatchSampler):
    """A BatchSampler that can drop the first batches of its next epoch without loading them.

    Mid-epoch resume draws the same permutation (same sampler generator state) and skips the
    index lists of the batches already trained on.
    """

    def __init__(self, sampler, batch_size: int, drop_last: bool):
        super().__init__(sampler, batch_size, drop_last)
        self._skip = 0

    def skip_next(self, batches: int) -> None:
        self._skip = batches

    def __iter__(self) -> Iterator[list[int]]:
        skip, self._skip = self._skip, 0
        return itertools.islice(super().__iter__(), skip, None)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    num_workers: int,
    seed: int,
    drop_last: bool = False,
    runtime: RuntimeConfig | None = None,
    collate_fn=None,
    distributed: bool = False,
) -> DataLoader:
    """Seeded shuffling and worker seeds, so a CPU run repeats exactly.

    The shuffle has its own generator (not the loader's, which seeds workers), so the order of
    an epoch depends only on that generator's state at the epoch start: what resume restores.
    ``distributed`` (training under ``torchrun``): each process reads its own shard through a
    DistributedSampler (shuffled by seed + epoch; the engine calls ``set_epoch``); ``batch_size``
    is per process.
    """
    runtime = runtime or RuntimeConfig()
    if distributed and is_distributed():
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
    elif shuffle:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
    else:
        sampler = SequentialSampler(dataset)
    return DataLoader(
        dataset,
        batch_sampler=ResumableBatchSampler(sampler, batch_size, drop_last and len(sampler) > batch_size),
        num_workers=num_workers,
        collate_fn=collate_fn,
        pin_memory=runtime.pin_memory and torch.cuda.is_available(),
        prefetch_factor=runtime.prefetch_factor if num_workers > 0 else None,
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(seed + get_rank()),
        persistent_workers=num_workers > 0,
    )


def prepare_model(model: nn.Module, device: torch.device, runtime: RuntimeConfig | None = None) -> nn.Module:
    """Move ``model`` to ``device`` (NHWC if ``channels_last``) and return the module to call:
    DDP-wrapped under ``torchrun``, compiled if ``runtime.compile``. ``model`` itself keeps the
    weights to save."""
    runtime = runtime or RuntimeConfig()
    model.to(device)
    if runtime.channels_last:
        model.to(memory_format=torch.channels_last)
    wrapped = wrap_ddp(model, device)
    return torch.compile(wrapped) if runtime.compile else wrapped


def training_parts(
    model: nn.Module, dataset: Dataset, cfg, *, seed: int, device: torch.device, runtime: RuntimeConfig, param_groups: list[dict] | None = None
) -> tuple[DataLoader, nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
    """What every training stage builds the same way from its params section (``batch_size``, ``lr``,
    ``weight_decay``, ``epochs``, ``lr_schedule``): the shuffled, resumable, sharded loader; the module
    to call (on ``device``, DDP/compiled as ``runtime`` says); AdamW and its per-iteration schedule.
    ``param_groups``: AdamW's groups when parts of the model learn at their own lr (default: every
    parameter at ``cfg.lr``)."""
    loader = make_loader(
        dataset, cfg.batch_size, shuffle=True, num_workers=runtime.loader_workers, seed=seed, drop_last=True, runtime=runtime, distributed=True
    )
    net = prepare_model(model, device, runtime)
    optimizer = create_optimizer(param_groups if param_groups is not None else model.parameters(), cfg.lr, cfg.weight_decay)
    scheduler = create_scheduler(optimizer, cfg.epochs * len(loader), cfg.lr_schedule)
    return loader, net, optimizer, scheduler


def backbone_lr_groups(model: nn.Module, *, lr: float, backbone_lr: float | None, key: str) -> list[dict] | None:
    """AdamW's groups when a pretrained ``model.backbone`` learns at its own ``backbone_lr`` and the
    rest (the new layers) at ``lr``; None when ``backbone_lr`` is None (one lr for every parameter).
    ``key`` names the param in the error for a model whose every parameter is in its backbone."""
    if backbone_lr is None:
        return None
    backbone = list(model.backbone.parameters())
    in_backbone = set(map(id, backbone))
    head = [param for param in model.parameters() if id(param) not in in_backbone]
    if not head:
        raise ValueError(f"{key}: {type(model).__name__} has no layers outside its backbone to train at another lr; set it to null")
    return [{"params": head, "lr": lr}, {"params": backbone, "lr": backbone_lr}]


class LiveHook(Hook):
    """Per-epoch mean losses to DVCLive (``dvc plots show`` draws them) and the learning rate."""

    def __init__(self, live, optimizer: torch.optim.Optimizer):
        self.live = live
        self.optimizer = optimizer
        self.logged: list[dict[str, float]] = []

    def after_epoch(self, state: LoopState, epoch_losses: dict[str, float]) -> None:
        row = {f"train/{name}": value for name, value in epoch_losses.items()}
        self._log(row | {"train/lr": self.optimizer.param_groups[0]["lr"]})

    def _log(self, row: dict[str, float]) -> None:
        for name, value in row.items():
            self.live.log_metric(name, value)
        self.live.next_step()
        self.logged.append(row)

    def state_dict(self) -> dict:
        return {"logged": list(self.logged)}

    def load_state_dict(self, state: dict) -> None:
        """DVC deleted the DVCLive outputs before the rerun: log the epochs done before the crash again."""
        for row in state["logged"]:
            self._log(row)


def save_model(path: str | Path, model: nn.Module, extra: dict) -> None:
    """A plain dict (tensors and plain values only) so it loads with ``weights_only=True``.
    Refuses NaN/inf tensors: a diverged model must never be saved as a stage's result."""
    state = model.state_dict()
    bad = [name for name, value in state.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if bad:
        raise FloatingPointError(f"{path}: not saved, {len(bad)} of {len(state)} tensors are not finite, e.g. {bad[:3]}")
    save_torch(path, {"model": state, **extra})


def load_model_state(path: str | Path, model: nn.Module, classes: Sequence[str] | None = None) -> dict:
    """Load a checkpoint written by ``save_model``; a truncated file, another model or another class
    list gives an error that names the file and what differs."""
    path = Path(path)
    checkpoint = load_torch(path)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        raise CheckpointError(f"{path}: not a model checkpoint of this project (no 'model' state dict)")
    saved = checkpoint.get("classes")
    if classes is not None and saved is not None and list(saved) != list(classes):
        raise CheckpointError(
            f"{path}: trained for {len(saved)} classes {list(saved)}, but the dataset has {len(classes)} "
            f"{list(classes)}; retrain it on this dataset (dvc repro)"
        )
    load_state_strict(model, checkpoint["model"], path)
    return checkpoint
