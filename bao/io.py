"""Atomic outputs: a stage that dies half-way never leaves a file DVC would cache as valid."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _remove_stale_temps(path: Path) -> None:
    """Temp siblings a killed run (SIGKILL: no cleanup) left behind; stages never write one path twice at once."""
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp*"):
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink(missing_ok=True)


def _temp_sibling(path: Path, suffix: str = "") -> Path:
    """A fresh name next to ``path``, so the final rename stays on one filesystem."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(handle)
    return Path(name)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file path that replaces ``path`` only if the block succeeds."""
    path = Path(path)
    temp = _temp_sibling(path, path.suffix)
    try:
        yield temp
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces directory ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    temp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield temp
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(temp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def write_json(path: str | Path, data: Any) -> None:
    with atomic_path(path) as temp:
        temp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_csv(path: str | Path, rows: list[dict]) -> None:
    import pandas as pd

    with atomic_path(path) as temp:
        pd.DataFrame(rows).to_csv(temp, index=False)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


class CheckpointError(ValueError):
    """A checkpoint file cannot be used here; the message names the file and the problem."""


def load_torch(path: str | Path) -> Any:
    """``torch.load`` with ``weights_only=True`` (no code runs from the file); a missing, truncated
    or foreign file raises an error that names it."""
    import torch  # here, not at module level: `python -m bao.evaluate` (which writes JSON) never loads torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for bad files
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: cannot read checkpoint (truncated, corrupt or not a PyTorch file): {reason}") from None


def save_torch(path: str | Path, obj: Any) -> None:
    import torch

    with atomic_path(path) as temp:
        torch.save(obj, temp)


class BoundedPool:
    """A few threads for per-image output work (PNG encoding, scoring) while the model runs on.

    At most ``max_pending`` tasks wait at once, so memory stays flat however many images there
    are; results come back in submission order through ``submit``'s return value and ``drain``.
    """

    def __init__(self, workers: int = 2, max_pending: int = 16):
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(max(1, workers))
        self.pending: deque = deque()
        self.max_pending = max(1, max_pending)

    def submit(self, function, *args, **kwargs) -> list:
        """Queue one task; returns the results of the oldest tasks it had to wait for."""
        self.pending.append(self.pool.submit(function, *args, **kwargs))
        done = []
        while len(self.pending) > self.max_pending:
            done.append(self.pending.popleft().result())
        return done

    def drain(self) -> list:
        results = [future.result() for future in self.pending]
        self.pending.clear()
        return results

    def __enter__(self) -> "BoundedPool":
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown(wait=True, cancel_futures=exc[0] is not None)
