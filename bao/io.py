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

import torch


def _remove_stale_temps(path: Path) -> None:
    """Temp siblings a killed run (SIGKILL: no cleanup) left behind, and the ``.<name>.old`` of an
    ``atomic_dir`` killed between its two renames; stages never write one path twice at once."""
    stale_paths = [*path.parent.glob(f".{glob.escape(path.name)}.*.tmp*"), path.with_name(f".{path.name}.old")]
    for stale in stale_paths:
        if stale.is_dir():
            shutil.rmtree(stale)
        else:
            stale.unlink(missing_ok=True)


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


JOURNAL = "JOURNAL.json"


def _staging_dir(first_output: Path) -> Path:
    return first_output.with_name(f".{first_output.name}.commit")


def _roll_forward(staging: Path) -> None:
    """Finish a committed journal: every staged output replaces its target (idempotent, so a
    run killed half-way through is completed by the next), then the staging directory goes."""
    moves = json.loads((staging / JOURNAL).read_text())
    for index, (staged_name, target) in enumerate(moves):
        staged, target = staging / staged_name, Path(target)
        if not staged.exists() and not staged.is_symlink():
            continue  # moved by the run that was killed
        if target.exists() or target.is_symlink():
            old = staging / f"old.{index}"
            shutil.rmtree(old) if old.is_dir() else old.unlink(missing_ok=True)
            os.replace(target, old)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, target)
    shutil.rmtree(staging)


def recover_outputs(first_output: str | Path) -> None:
    """Settle what a killed ``atomic_outputs`` left: a committed journal is completed, an
    uncommitted staging directory is deleted (the previous outputs were never touched)."""
    staging = _staging_dir(Path(first_output))
    if (staging / JOURNAL).is_file():
        _roll_forward(staging)
    elif staging.exists():
        shutil.rmtree(staging)


@contextlib.contextmanager
def atomic_outputs(*targets: str | Path) -> Iterator[list[Path]]:
    """A stage's outputs (files or directories) committed as one unit.

    Yields one staging path per target (not yet created: write a file there or make a
    directory). On success a journal naming every move is written atomically (the commit
    point), then each staged output replaces its target. A run killed before the journal
    leaves every previous output as it was; one killed after it is completed by the next call
    (``recover_outputs``). The staging directory sits next to the first target, so the renames
    stay on one filesystem.
    """
    targets = [Path(target) for target in targets]
    if not targets:
        raise ValueError("atomic_outputs needs at least one output path")
    recover_outputs(targets[0])
    staging = _staging_dir(targets[0])
    staging.mkdir(parents=True)
    names = [f"{index}.{target.name}" for index, target in enumerate(targets)]
    try:
        yield [staging / name for name in names]
        missing = [str(target) for name, target in zip(names, targets) if not (staging / name).exists()]
        if missing:
            raise RuntimeError(f"outputs not written, nothing committed: {', '.join(missing)}")
        journal = staging / f"{JOURNAL}.tmp"
        journal.write_text(json.dumps([[name, str(target)] for name, target in zip(names, targets)]))
        os.replace(journal, staging / JOURNAL)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _roll_forward(staging)


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
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for bad files
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: cannot read checkpoint (truncated, corrupt or not a PyTorch file): {reason}") from None


def save_torch(path: str | Path, obj: Any) -> None:
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

    def submit(self, function, *args) -> list:
        """Queue one task; returns the results of the oldest tasks it had to wait for."""
        self.pending.append(self.pool.submit(function, *args))
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
