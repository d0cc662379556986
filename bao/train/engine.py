"""The one training loop shared by every training stage; what differs plugs in as a step function and hooks."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from bao.runtime import amp_dtype, autocast

StepFn = Callable[[dict, "LoopState"], dict[str, torch.Tensor]]


@dataclass
class LoopState:
    epoch: int = 0
    step: int = 0
    step_in_epoch: int = 0
    iters_per_epoch: int = 0
    last_finite_loss: float | None = None
    history: list[dict[str, float]] = field(default_factory=list)


class Hook:
    """Override what you need; every method gets the live loop state."""

    def before_epoch(self, state: LoopState) -> None: ...

    def after_step(self, state: LoopState, losses: dict[str, float]) -> None: ...

    def after_epoch(self, state: LoopState, epoch_losses: dict[str, float]) -> None: ...


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def train_loop(
    step_fn: StepFn,
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    epochs: int,
    device: torch.device,
    hooks: Sequence[Hook] = (),
    description: str = "train",
) -> LoopState:
    """Run ``epochs`` epochs; ``step_fn`` returns named losses that are summed and back-propagated."""
    state = LoopState(iters_per_epoch=len(loader))
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype(device) == torch.float16)
    while state.epoch < epochs:
        model.train()
        for hook in hooks:
            hook.before_epoch(state)
        totals: dict[str, float] = {}
        progress = tqdm(loader, desc=f"{description} epoch {state.epoch + 1}/{epochs}", leave=False, dynamic_ncols=True)
        for state.step_in_epoch, batch in enumerate(progress):
            with autocast(device):
                losses = step_fn(to_device(batch, device), state)
            total = sum(losses.values())
            _check_finite(total, state)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            scaler.step(optimizer)
            scaler.update()
            if scheduler is not None:
                scheduler.step()
            values = {name: float(value.detach()) for name, value in losses.items()} | {"loss": float(total.detach())}
            state.last_finite_loss = values["loss"]
            state.step += 1
            for name, value in values.items():
                totals[name] = totals.get(name, 0.0) + value
            progress.set_postfix(loss=f"{values['loss']:.4f}")
            for hook in hooks:
                hook.after_step(state, values)
        epoch_losses = {name: total / max(1, state.iters_per_epoch) for name, total in totals.items()}
        state.history.append(epoch_losses)
        for hook in hooks:
            hook.after_epoch(state, epoch_losses)
        state.epoch += 1
    return state


def _check_finite(total: torch.Tensor, state: LoopState) -> None:
    value = float(total.detach())
    if not math.isfinite(value):
        raise FloatingPointError(
            f"loss became {value} at epoch {state.epoch}, step {state.step_in_epoch} (global step {state.step}); "
            f"last finite loss: {state.last_finite_loss}"
        )


def create_optimizer(parameters, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)


def create_scheduler(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Polynomial decay (power 0.9) per iteration, the usual WSSS/DeepLab schedule."""
    return torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=max(1, total_steps), power=0.9)
