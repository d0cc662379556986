"""The one training loop shared by every training stage; what differs plugs in as a step function and hooks."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from bao.distributed import all_reduce_mean, is_main_process
from bao.runtime import amp_dtype, autocast

log = logging.getLogger("bao")

StepFn = Callable[[dict, "LoopState"], dict[str, torch.Tensor]]


@dataclass
class LoopState:
    epoch: int = 0
    step: int = 0
    step_in_epoch: int = 0
    iters_per_epoch: int = 0
    last_finite_loss: float | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    throughput: list[dict[str, float]] = field(default_factory=list)  # per epoch, this process; not a metric
    start_batch: int = 0  # batches of the current epoch done before a mid-epoch resume
    totals: dict[str, float] = field(default_factory=dict)  # running loss sums of the current epoch


@dataclass
class TrainingRun:
    """What one run updates; a resume checkpoint holds the state of each of these."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    scaler: torch.amp.GradScaler
    loader: Iterable
    hooks: Sequence["Hook"]
    amp: bool = True  # CUDA mixed precision (runtime.amp)
    channels_last: bool = False  # NHWC images (runtime.channels_last)


class Hook:
    """Override what you need; every method gets the live loop state."""

    def before_train(self, run: TrainingRun, state: LoopState) -> None: ...

    def before_epoch(self, state: LoopState) -> None: ...

    def after_step(self, state: LoopState, losses: dict[str, float]) -> None: ...

    def after_epoch(self, state: LoopState, epoch_losses: dict[str, float]) -> None: ...

    def state_dict(self) -> dict:
        """What a resume checkpoint keeps of this hook (tensors and plain values only)."""
        return {}

    def load_state_dict(self, state: dict) -> None: ...


def to_device(batch: dict, device: torch.device, channels_last: bool = False) -> dict:
    """Asynchronous copies (from pinned memory); 4-D float tensors to NHWC if ``channels_last``."""
    moved = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
    if channels_last:
        for key, value in moved.items():
            if torch.is_tensor(value) and value.dim() == 4 and value.is_floating_point():
                moved[key] = value.contiguous(memory_format=torch.channels_last)
    return moved


def batch_size_of(batch: dict) -> int:
    image = batch.get("image")
    return int(image.shape[0]) if torch.is_tensor(image) else 0


class EpochTimer:
    """Images per second and the fraction of the epoch spent waiting for the loader (data starvation)."""

    def __init__(self):
        self.start = self.mark = time.perf_counter()
        self.waiting = 0.0
        self.images = 0

    def got_batch(self, batch: dict) -> None:
        self.waiting += time.perf_counter() - self.mark
        self.images += batch_size_of(batch)

    def step_done(self) -> None:
        self.mark = time.perf_counter()

    def summary(self) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        return {"images_per_s": self.images / elapsed, "data_wait_fraction": self.waiting / elapsed, "seconds": elapsed}


def set_sampler_epoch(loader: Iterable, epoch: int) -> None:
    """A DistributedSampler reshuffles its shards only when told the epoch."""
    for sampler in (getattr(getattr(loader, "batch_sampler", None), "sampler", None), getattr(loader, "sampler", None)):
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
            return


def train_loop(
    step_fn: StepFn,
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    *,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    epochs: int,
    device: torch.device,
    hooks: Sequence[Hook] = (),
    description: str = "train",
    checkpoint: Hook | None = None,
    amp: bool = True,
    channels_last: bool = False,
) -> LoopState:
    """Run ``epochs`` epochs; ``step_fn`` returns named losses that are summed and back-propagated.

    ``checkpoint`` (a CheckpointHook) runs after the other hooks, so it saves what they updated;
    its ``before_train`` may restore a run that was interrupted. Mixed precision on CUDA unless
    ``amp`` is False (fp16 gets a GradScaler, bf16 needs none). Under ``torchrun`` pass the bare
    model here (what checkpoints hold) and call the DDP-wrapped one in ``step_fn``; the epoch
    losses in ``history`` are then averaged over processes.
    """
    hooks = [*hooks, checkpoint] if checkpoint is not None else list(hooks)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype(device, amp) == torch.float16)
    run = TrainingRun(model, optimizer, scheduler, scaler, loader, hooks, amp, channels_last)
    state = LoopState(iters_per_epoch=len(loader))
    for hook in hooks:
        hook.before_train(run, state)
    while state.epoch < epochs:
        model.train()
        set_sampler_epoch(loader, state.epoch)
        for hook in hooks:
            hook.before_epoch(state)
        batches = tqdm(
            epoch_batches(loader, state.start_batch), desc=f"{description} epoch {state.epoch + 1}/{epochs}",
            initial=state.start_batch, total=state.iters_per_epoch, leave=False, dynamic_ncols=True, disable=not is_main_process(),
        )
        timer = EpochTimer()
        for state.step_in_epoch, batch in enumerate(batches, start=state.start_batch):
            timer.got_batch(batch)
            values = _train_step(step_fn, batch, run, state, device=device)
            batches.set_postfix(loss=f"{values['loss']:.4f}")
            for hook in hooks:
                hook.after_step(state, values)
            timer.step_done()
        epoch_losses = all_reduce_mean({name: total / max(1, state.iters_per_epoch) for name, total in state.totals.items()})
        state.history.append(epoch_losses)
        state.throughput.append(timer.summary())
        log.info("%s epoch %d: %.1f images/s, %.0f%% of the time waiting for data", description, state.epoch + 1,
                 state.throughput[-1]["images_per_s"], 100 * state.throughput[-1]["data_wait_fraction"])
        for hook in hooks:
            hook.after_epoch(state, epoch_losses)
        state.epoch, state.start_batch, state.totals = state.epoch + 1, 0, {}
    return state


def _train_step(step_fn: StepFn, batch: dict, run: TrainingRun, state: LoopState, *, device: torch.device) -> dict[str, float]:
    """Forward, finiteness check (before any weight changes), backward, optimizer and LR step."""
    with autocast(device, run.amp):
        losses = step_fn(to_device(batch, device, run.channels_last), state)
    total = sum(losses.values())
    _check_finite(total, state)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(total).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    _check_finite_weights(run, state)
    if run.scheduler is not None:
        run.scheduler.step()
    values = {name: float(value.detach()) for name, value in losses.items()} | {"loss": float(total.detach())}
    state.last_finite_loss = values["loss"]
    state.step += 1
    for name, value in values.items():
        state.totals[name] = state.totals.get(name, 0.0) + value
    return values


def epoch_batches(loader: Iterable, start: int) -> Iterable:
    """The epoch's batches from index ``start`` on, in the same shuffle order as an uninterrupted run.

    The skipped batches are dropped as index lists in the batch sampler, never loaded, so the
    augmentation RNG is not consumed for them (see ``bao.train.common.ResumableBatchSampler``).
    """
    if start:
        sampler = getattr(loader, "batch_sampler", None)
        if not hasattr(sampler, "skip_next"):
            raise TypeError("resuming mid-epoch needs a loader made by bao.train.common.make_loader")
        sampler.skip_next(start)
    return loader


def _check_finite(total: torch.Tensor, state: LoopState) -> None:
    """Stop before a NaN/inf loss touches the weights, so no hook (checkpoint included) saves them."""
    value = float(total.detach())
    if not math.isfinite(value):
        raise FloatingPointError(
            f"loss became {value} at step {state.step + 1} (epoch {state.epoch + 1}, batch "
            f"{state.step_in_epoch + 1}/{state.iters_per_epoch}); last finite loss: {state.last_finite_loss} "
            f"(step {state.step}). Training stopped; the last good checkpoint is kept."
        )


def _check_finite_weights(run: TrainingRun, state: LoopState) -> None:
    """Stop when the step just taken made a weight NaN/inf (``lr: 1e39``, an exploding update from
    a finite loss), before any hook could save it: the run exits with an error and the resume
    checkpoint keeps the last good weights. One fused norm over all parameters and one sync per
    step, as cheap as the loss check."""
    params = [param for param in run.model.parameters() if param.requires_grad]
    if not params or bool(torch.isfinite(torch.stack(torch._foreach_norm(params)).sum())):
        return
    names = [name for name, param in run.model.named_parameters() if param.requires_grad and not torch.isfinite(param).all()]
    if not names:  # finite weights whose squares overflowed the fused norm
        return
    raise FloatingPointError(
        f"weights became non-finite in the optimizer step of step {state.step + 1} (epoch {state.epoch + 1}, batch "
        f"{state.step_in_epoch + 1}/{state.iters_per_epoch}): {len(names)} of {len(params)} parameter tensors, e.g. "
        f"{names[:3]}, at lr {run.optimizer.param_groups[0]['lr']}; last finite loss: {state.last_finite_loss} "
        f"(step {state.step}). Training stopped; the last good checkpoint is kept."
    )


def create_optimizer(parameters, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)


LR_SCHEDULES = ("poly", "constant")


def create_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, schedule: str = "poly"
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The per-iteration LR schedule a stage's ``lr_schedule`` names.

    ``poly``: lr * (1 - step / total_steps) ** 0.9, the usual WSSS/DeepLab schedule (CAM and DeepLab
    stages). ``constant``: no scheduler at all, the lr never changes (the official BAO training:
    AdamW at 5e-5 throughout)."""
    if schedule == "constant":
        return None
    if schedule != "poly":
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {schedule!r}")
    return torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=max(1, total_steps), power=0.9)
