"""A stage's outputs commit as one unit: a kill at any point leaves either every previous output
or every new one (after the next run's recovery), and no stale temp or `.old` directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import bao.io
from bao.io import atomic_dir, atomic_outputs, recover_outputs


def _write_set(root: Path, version: str) -> None:
    """What pseudo_label writes: a PNG directory and files in other directories."""
    with atomic_outputs(root / "results/labels", root / "metrics/m.json", root / "plots/p.csv") as (labels, metrics, plot):
        labels.mkdir()
        for index in range(3):
            (labels / f"{index}.png").write_text(version)
        metrics.parent.mkdir(parents=True, exist_ok=True)
        metrics.write_text(version)
        plot.write_text(version)


def _read_set(root: Path) -> dict[str, str]:
    files = [root / "metrics/m.json", root / "plots/p.csv", *sorted((root / "results/labels").glob("*"))]
    return {str(path.relative_to(root)): path.read_text() for path in files if path.exists()}


def _hidden(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob(".*"))


def test_outputs_replace_the_previous_set_together(tmp_path):
    _write_set(tmp_path, "v1")
    _write_set(tmp_path, "v2")
    assert set(_read_set(tmp_path).values()) == {"v2"} and len(_read_set(tmp_path)) == 5
    assert _hidden(tmp_path) == []


def test_failure_before_the_commit_leaves_every_previous_output(tmp_path):
    _write_set(tmp_path, "v1")
    with pytest.raises(RuntimeError, match="boom"), atomic_outputs(tmp_path / "results/labels", tmp_path / "metrics/m.json") as (labels, _):
        labels.mkdir()
        (labels / "0.png").write_text("v2")
        raise RuntimeError("boom")
    assert set(_read_set(tmp_path).values()) == {"v1"} and _hidden(tmp_path) == []


def test_an_output_left_unwritten_commits_nothing(tmp_path):
    _write_set(tmp_path, "v1")
    with pytest.raises(RuntimeError, match="outputs not written, nothing committed: .*m.json"):
        with atomic_outputs(tmp_path / "results/labels", tmp_path / "metrics/m.json") as (labels, _):
            labels.mkdir()
    assert set(_read_set(tmp_path).values()) == {"v1"}


def test_kill_in_the_middle_of_the_commit_is_completed_by_the_next_run(tmp_path, monkeypatch):
    """SIGKILL after the journal and three of the renames: the next call rolls the commit forward."""
    _write_set(tmp_path, "v1")
    real_replace, calls = os.replace, []

    def killed_after_three_renames(source, target):
        real_replace(source, target)
        if "JOURNAL" not in str(target):
            calls.append(target)
            if len(calls) == 3:  # old labels moved aside, new labels in, old metrics moved aside: killed
                raise KeyboardInterrupt

    monkeypatch.setattr(bao.io.os, "replace", killed_after_three_renames)
    with pytest.raises(KeyboardInterrupt):
        _write_set(tmp_path, "v2")
    monkeypatch.setattr(bao.io.os, "replace", real_replace)
    assert not (tmp_path / "metrics/m.json").exists()  # the state a kill leaves: half-committed
    recover_outputs(tmp_path / "results/labels")  # what the next run of the stage does first
    assert set(_read_set(tmp_path).values()) == {"v2"} and len(_read_set(tmp_path)) == 5
    assert _hidden(tmp_path) == []


def test_kill_before_the_journal_is_rolled_back_by_the_next_run(tmp_path, monkeypatch):
    _write_set(tmp_path, "v1")
    staging = tmp_path / "results/.labels.commit"
    staging.mkdir()
    (staging / "0.labels").mkdir()  # a killed run's half-written staging directory, no journal
    _write_set(tmp_path, "v2")
    assert set(_read_set(tmp_path).values()) == {"v2"} and _hidden(tmp_path) == []


def test_atomic_dir_cleans_the_old_directory_of_a_run_killed_between_its_renames(tmp_path):
    target = tmp_path / "dvclive"
    (tmp_path / ".dvclive.old").mkdir()  # killed after moving the previous directory aside
    (tmp_path / ".dvclive.old/metrics.json").write_text("{}")
    (tmp_path / ".dvclive.x1y2.tmp").mkdir()  # and before moving the new one in
    with atomic_dir(target) as staging:
        (staging / "metrics.json").write_text('{"new": 1}')
    assert (target / "metrics.json").read_text() == '{"new": 1}'
    assert _hidden(tmp_path) == []
