"""Pieces every training stage shares: loaders, the DVCLive hook, checkpoints."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from bao.io import save_torch
from bao.runtime import seed_worker
from bao.train.engine import Hook, LoopState


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, num_workers: int, seed: int, drop_last: bool = False) -> DataLoader:
    """Seeded shuffling and worker seeds, so a CPU run repeats exactly."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        drop_last=drop_last and len(dataset) > batch_size,
        pin_memory=torch.cuda.is_available(),
        worker_init_fn=seed_worker,
        generator=generator,
        persistent_workers=num_workers > 0,
    )


class LiveHook(Hook):
    """Per-epoch mean losses to DVCLive (``dvc plots show`` draws them) and the learning rate."""

    def __init__(self, live, optimizer: torch.optim.Optimizer):
        self.live = live
        self.optimizer = optimizer

    def after_epoch(self, state: LoopState, epoch_losses: dict[str, float]) -> None:
        for name, value in epoch_losses.items():
            self.live.log_metric(f"train/{name}", value)
        self.live.log_metric("train/lr", self.optimizer.param_groups[0]["lr"])
        self.live.next_step()


def save_model(path: str | Path, model: nn.Module, extra: dict) -> None:
    """A plain dict (tensors and plain values only) so it loads with ``weights_only=True``."""
    save_torch(path, {"model": model.state_dict(), **extra})


def load_model_state(path: str | Path, model: nn.Module) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(checkpoint["model"])
    except (RuntimeError, KeyError) as error:
        raise ValueError(f"{path}: checkpoint does not fit this model ({error})") from None
    return checkpoint
