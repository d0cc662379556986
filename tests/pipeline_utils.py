"""Helpers for end-to-end tests: a throw-away copy of the repo with a tiny params override."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
COPIED = ("bao", "stages", "dvc.yaml", "params.yaml", ".dvc/config", ".dvc/plots", "vendor/vega/template.html",
          ".dvcignore", ".gitignore", "pyproject.toml", "data/raw/README.md", "data/none", "runtime.example.yaml")

TINY_OVERRIDES = {
    "data": {"synthetic": {"num_train": 24, "num_val": 8, "image_size": 64, "num_classes": 3}},
    "train_cam": {"epochs": 2, "batch_size": 8, "crop_size": 64, "resize_long": [56, 72]},
    "bao": {"epochs": 2, "batch_size": 8, "crop_size": 64, "resize_long": [56, 72]},
    "pseudo_label": {"scales": [48, 64], "thresholds": [0.1, 0.3, 0.5, 0.7, 0.9]},
    "train_seg": {"epochs": 1, "batch_size": 8, "crop_size": 64, "resize_long": [56, 72]},
    "crf": {"enabled": True},  # with runtime crf_workers 2 (the default): the CRF worker pool in the real DAG
    "report": {"gallery_size": 3},
}


def deep_update(base: dict, overrides: dict) -> dict:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def run(cmd: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def make_repo_copy(destination: Path, overrides: dict | None = None) -> Path:
    """Copy the code and pipeline into ``destination``, apply param overrides, commit to a new git repo."""
    destination.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        source = REPO / name
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    params_file = destination / "params.yaml"
    params = deep_update(yaml.safe_load(params_file.read_text()), overrides or {})
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], destination)
    # an identity of its own: `dvc exp run` commits, and a fresh machine may have no global one
    run(["git", "config", "user.email", "tests@bao-wsss.invalid"], destination)
    run(["git", "config", "user.name", "bao-wsss tests"], destination)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A"], destination)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "copy"], destination)
    return destination


def stage_argv(repo: Path, name: str) -> list[str]:
    """The arguments dvc.yaml's ``cmd`` gives stage ``name`` (rendered by DVC), for calling
    ``stages.<name>.main(argv)`` in-process exactly as ``dvc repro`` would run it."""
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        (stage,) = dvc_repo.stage.collect(name)
    argv = shlex.split(stage.cmd)
    assert argv[:3] == ["python", "-m", f"stages.{name}"], stage.cmd
    return argv[3:]


def declared_outputs(repo: Path) -> dict[str, list[str]]:
    """Every stage's outputs (outs, metrics, plots) as DVC renders dvc.yaml's templates."""
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        return {stage.name: [out.def_path for out in stage.outs] for stage in dvc_repo.index.stages}


class RecordingLive:
    """Stands in for DVCLive's ``Live``: keeps every logged metric in order (``metrics``) and per
    DVCLive step (``rows``)."""

    def __init__(self):
        self.metrics: list[tuple[str, float]] = []
        self.rows: list[dict[str, float]] = []
        self.current: dict[str, float] = {}

    def log_metric(self, name: str, value: float) -> None:
        self.metrics.append((name, value))
        self.current[name] = value

    def next_step(self) -> None:
        self.rows.append(self.current)
        self.current = {}


def tiny_synthetic_manifest(root: Path, *, num_train: int = 8, num_val: int = 2, image_size: int = 64, num_classes: int = 3):
    """A prepared synthetic dataset under ``root`` (made from inside it: an absolute out_dir would
    store paths into the staging directory), read back as a Manifest."""
    import os

    from bao.config import DataConfig, SyntheticConfig
    from bao.data.manifest import read_manifest
    from bao.data.prepare import prepare_dataset

    data = DataConfig(dataset="synthetic", root="unused", train_split="train", val_split="val",
                      synthetic=SyntheticConfig(num_train=num_train, num_val=num_val, image_size=image_size, num_classes=num_classes))
    previous = os.getcwd()
    os.chdir(root)
    try:
        prepare_dataset(data, "prepared")
    finally:
        os.chdir(previous)
    return read_manifest(root / "prepared")
