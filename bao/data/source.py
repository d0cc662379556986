"""What a dataset reader hands to ``prepare``: rows to validate, class names, and deferred work."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bao.data.manifest import stored_path


@dataclass
class Source:
    """``table`` has the manifest columns (plus optional ``height``/``width`` to check image sizes
    against). ``finish`` runs only after validation passed, for work too costly to do on a dataset
    that may be rejected (COCO mask rasterisation); it may fill ``mask_path`` and returns counts."""

    table: pd.DataFrame
    classes: tuple[str, ...]
    info: dict = field(default_factory=dict)
    finish: Callable[[Path, pd.DataFrame], dict] | None = None


def label_vector(names, classes: tuple[str, ...]) -> list[int]:
    """Multi-hot vector of ``names``, which must all be in ``classes``."""
    present = set(names)
    return [int(name in present) for name in classes]


def store_path(path: Path, base: Path, staging: Path | None) -> str:
    """Manifest path of ``path``: files generated in the staging directory move with it, so they are
    stored relative to it; input files as ``stored_path`` relative to the final directory ``base``."""
    if staging is not None and path.is_relative_to(staging):
        return path.relative_to(staging).as_posix()
    return stored_path(path, base)


MAX_ID_BYTES = 200  # an id names files (``<id>.png``); most filesystems stop at 255 bytes a name


def id_problem(image_id: str) -> str | None:
    """Why ``image_id`` cannot safely name files of its own (``converted/<id>.png``, pseudo-label
    PNGs): ids come from list files, CSV and JSON, so they are hostile until checked. None if fine."""
    if not image_id.strip():
        return "is empty"
    if image_id in (".", ".."):
        return "is '.' or '..'"
    problem = _name_problem(image_id)
    if problem:
        return problem
    if len(image_id.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        return f"is longer than {MAX_ID_BYTES} bytes"
    return None


def file_name_problem(name: str) -> str | None:
    """Why ``name`` (an image named in a CSV or JSON) is not a plain file name in its folder."""
    if not name or name in (".", ".."):
        return "is not a file name"
    return _name_problem(name)


def image_name_problem(name: str) -> str | None:
    """Why an image file name from a CSV or JSON cannot be used: not a plain file name, or a stem
    that cannot be an id (the id is the stem)."""
    return file_name_problem(name) or id_problem(Path(name).stem)


def _name_problem(name: str) -> str | None:
    """What ids and file names share: no separator (it would leave its folder), no control character."""
    if "/" in name or "\\" in name:
        return "contains a path separator, so it would leave its folder"
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        return "contains a NUL or other control character"
    return None


@dataclass(frozen=True)
class RootGuard:
    """The directories a dataset may be read from (data.root, data.sbd_root, prepare's staging
    directory), resolved, so ``..`` and symlinks that lead elsewhere are caught; ``allow_outside``
    (data.allow_outside_root) lets any path through."""

    roots: tuple[Path, ...]
    allow_outside: bool = False

    @classmethod
    def of(cls, roots, allow_outside: bool = False) -> "RootGuard":
        return cls(tuple(Path(root).resolve() for root in roots if root is not None), allow_outside)

    def problem(self, path: Path) -> str | None:
        """A problem naming ``path`` if it resolves outside every root; None if it may be read."""
        if self.allow_outside:
            return None
        try:
            real = Path(path).resolve()
        except (OSError, RuntimeError) as error:  # a symlink loop
            return f"{path}: cannot be resolved ({error})"
        if any(real.is_relative_to(root) for root in self.roots):
            return None
        shown = ", ".join(str(root) for root in self.roots)
        return f"{path}: resolves to {real}, outside the dataset ({shown}); set data.allow_outside_root: true to read it"


ANYWHERE = RootGuard((), allow_outside=True)


def read_text(path: Path, problems: list[str], guard: RootGuard = ANYWHERE) -> str | None:
    """The UTF-8 text of a list, CSV or class file; None (and a problem naming it) if it cannot be read."""
    outside = guard.problem(path)
    if outside:
        problems.append(outside)
        return None
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        problems.append(f"{path}: not UTF-8 text (byte {error.start}: {error.reason}); save it as UTF-8")
    except OSError as error:
        problems.append(f"{path}: cannot read ({error.strerror or error})")
    return None


def inside(directory: Path, path: Path) -> Path:
    """``path``, after making sure it lies in ``directory``: the last guard before a write, in case
    an unchecked name slipped through (ids are checked when read)."""
    if not Path(os.path.normpath(path)).is_relative_to(os.path.normpath(directory)):
        raise ValueError(f"{path}: refusing to write outside {directory}")
    return path
