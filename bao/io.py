"""Atomic outputs: a stage that dies half-way never leaves a file DVC would cache as valid."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import json
import logging
import math
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _remove_stale_temps(path: Path) -> None:
    """Temp siblings a killed run (SIGKILL: no cleanup) left behind, and the ``.<name>.old`` of an
    ``atomic_dir`` killed between its two renames; stages never write one path twice at once."""
    stale_paths = [*path.parent.glob(f".{glob.escape(path.name)}.*.tmp*"), path.with_name(f".{path.name}.old")]
    for stale in stale_paths:
        if stale.is_dir():
            shutil.rmtree(stale)
        else:
            stale.unlink(missing_ok=True)


def _create_sibling(path: Path, suffix: str, create) -> Path:
    """A fresh name next to ``path`` (so the final rename stays on one filesystem), made by
    ``create(name)``. Unlike mkstemp/mkdtemp (0600/0700) the mode is the usual 0666/0777 less the
    umask, so outputs, git-tracked metrics included, get the permissions any other file would."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    for _ in range(100):
        name = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp{suffix}"
        try:
            create(name)
        except FileExistsError:
            continue
        return name
    raise FileExistsError(errno.EEXIST, f"no free temporary name next to {path}")


def _temp_sibling(path: Path, suffix: str = "") -> Path:
    return _create_sibling(path, suffix, lambda name: os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)))


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
    temp = _create_sibling(path, "", lambda name: os.mkdir(name, 0o777))
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


class LockHeldError(RuntimeError):
    """Another process holds the lock of an output; the message names the output and the lock file."""


@contextlib.contextmanager
def exclusive_lock(directory: str | Path, what: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``directory`` for the block, or fail at once if another process
    holds it: two runs writing ``what`` (an output in that directory) at the same time would delete
    each other's staging directories (each removes the temp siblings a killed run left). Locking
    the directory itself leaves no lock file behind, and the kernel drops the lock when its holder
    dies, so a killed run never leaves it stuck."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    handle = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeldError(
                f"{what}: another process is writing it (it holds the lock on {directory}); wait for it to finish"
            ) from None
        except OSError as error:  # a filesystem without flock (some network mounts): run unprotected
            logging.getLogger("bao").warning("cannot lock %s (%s); a concurrent run writing %s is not detected", directory, error, what)
        yield
    finally:
        os.close(handle)  # closing releases the lock


def _non_finite_keys(data: Any, prefix: str = "") -> list[str]:
    if isinstance(data, float):
        return [] if math.isfinite(data) else [prefix or "(top level)"]
    if isinstance(data, dict):
        return [key for name, value in data.items() for key in _non_finite_keys(value, f"{prefix}.{name}" if prefix else str(name))]
    if isinstance(data, (list, tuple)):
        return [key for index, value in enumerate(data) for key in _non_finite_keys(value, f"{prefix}[{index}]")]
    return []


def write_json(path: str | Path, data: Any) -> None:
    """Strict JSON: a NaN or inf (which json would write as the non-standard NaN/Infinity) is an
    error naming the keys, and nothing is written; a missing number is None (null)."""
    bad = _non_finite_keys(data)
    if bad:
        shown = ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise ValueError(f"{path}: refusing to write non-finite numbers at {shown}")
    with atomic_path(path) as temp:
        temp.write_text(json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n")


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
        raise CheckpointError(
            f"{path}: cannot read checkpoint (truncated, corrupt or not a PyTorch file): {_load_failure_reason(error)}"
        ) from None


def _load_failure_reason(error: Exception) -> str:
    """What is wrong with the file, without torch's advice to retry with ``weights_only=False`` or
    to allowlist the file's classes: either would let a hostile file run code."""
    text = str(error).strip()
    if "WeightsUnpickler error:" in text:
        detail = " ".join(text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0].split())
        text = "content a weights-only load refuses: " + detail.split(". Please", 1)[0].split(" Please", 1)[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reason = lines[0] if lines else type(error).__name__
    return type(error).__name__ if "weights_only" in reason or "safe_globals" in reason else reason


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
