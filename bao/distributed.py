"""Multi-process (``torchrun``) helpers, in one place: every stage also runs as a single process.

Under ``torchrun --nproc_per_node N -m stages.<name>`` each process trains on its shard of the
data (DDP averages gradients), metrics are summed across processes, and only the main process
writes files. Run as ``python -m stages.<name>`` the same code sees a world of one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist

from bao.config import DEFAULT_DIST_TIMEOUT_S

T = TypeVar("T")


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def launch_rank() -> int:
    """This process's rank as torchrun set it, before (or without) joining the process group."""
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """Rank 0, the only process that writes checkpoints, metrics and logs."""
    return get_rank() == 0


def init_distributed(device_type: str, timeout_s: int = DEFAULT_DIST_TIMEOUT_S) -> bool:
    """Join the ``torchrun`` process group (NCCL on CUDA, gloo on CPU); False when not launched by it.

    ``timeout_s`` bounds every collective (a barrier waiting for a process that is stuck); a
    process that fails aborts at once instead (``abort_group_on_uncaught_exception``).
    """
    if not launched_by_torchrun() or is_distributed():
        return is_distributed()
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    abort_group_on_uncaught_exception()
    return True


def abort_group_on_uncaught_exception() -> None:
    """An exception that escapes one process ends that process at once (traceback printed, exit
    code 1, no atexit handlers: leaving the group cleanly would wait for the others), so its
    peers' next collective fails (gloo) or torchrun stops them (NCCL), instead of them waiting
    at a barrier until the timeout."""
    previous = sys.excepthook

    def abort(kind, error, trace) -> None:
        try:
            logging.getLogger("bao").error("rank %d failed, aborting the process group: %s", get_rank(), error)
            previous(kind, error, trace)
        except BaseException:  # noqa: BLE001 - whatever happens while reporting, still abort
            traceback.print_exception(kind, error, trace)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)

    sys.excepthook = abort


def leave_process_group() -> None:
    """Run at exit by a stage under ``torchrun``. No barrier: a peer that crashed would hang it."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def _reduce_device() -> torch.device:
    """NCCL reduces CUDA tensors only; gloo reduces CPU tensors."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: np.ndarray) -> np.ndarray:
    """Element-wise sum over processes (exact for integer counts such as confusion matrices)."""
    if not is_distributed():
        return values
    tensor = torch.from_numpy(np.ascontiguousarray(values)).to(_reduce_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.cpu().numpy()


def all_reduce_mean(values: dict[str, float]) -> dict[str, float]:
    """Mean of named floats over processes (per-epoch losses), same keys on every process."""
    if not is_distributed():
        return values
    names = sorted(values)
    summed = all_reduce_sum(np.array([values[name] for name in names], dtype=np.float64))
    return {name: float(total) / get_world_size() for name, total in zip(names, summed)}


def broadcast_object(obj):
    """Rank 0's ``obj`` on every process (e.g. the staging directory it created)."""
    if not is_distributed():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def gather_objects(obj) -> list:
    """Every process's picklable ``obj``, in rank order (e.g. each rank's RNG state)."""
    if not is_distributed():
        return [obj]
    gathered: list = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def gather_tensors(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Every process's CPU tensor (shapes may differ), in rank order."""
    if not is_distributed():
        return [tensor]
    gathered: list = [None] * get_world_size()
    dist.all_gather_object(gathered, tensor.cpu())
    return gathered


def shard(items: Sequence[T]) -> list[T]:
    """This process's share of an inference workload: every world-size-th item, no padding, no repeats."""
    return list(items[get_rank() :: get_world_size()])


def wrap_ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DDP around ``model`` when distributed (gradients averaged across processes), else ``model``."""
    if not is_distributed():
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


@contextlib.contextmanager
def shared_atomic_outputs(*targets):
    """``bao.io.atomic_outputs`` under torchrun: rank 0 stages, every process learns the staging
    paths (to write its shard of a directory output) and rank 0 commits once all are done."""
    from bao.io import atomic_outputs

    if not is_distributed():
        with atomic_outputs(*targets) as staged:
            yield staged
        return
    if is_main_process():
        with atomic_outputs(*targets) as staged:
            broadcast_object([str(path) for path in staged])
            yield staged
            barrier()
    else:
        yield [Path(path) for path in broadcast_object(None)]
        barrier()
