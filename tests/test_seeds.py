"""Seed variance the DVC way: `dvc exp run --queue -S 'seed=range(...)'`, `dvc queue start`, then
`python -m bao.seeds` summarises the finished experiments as mean +- std."""

from __future__ import annotations

import copy
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from bao.seeds import SeedSummaryError, markdown_table, summarize

CAPTURED = Path(__file__).parent / "data/exp_show_3_seeds.json"  # `dvc exp show --json` of a real 3-seed queue (DVC 3.67)
REPO = Path(__file__).resolve().parents[1]


def _captured() -> list:
    return json.loads(CAPTURED.read_text())


def test_summary_of_captured_exp_show_is_mean_and_sample_std_per_metric():
    summary = summarize(_captured())
    assert summary["seeds"] == [0, 1, 2] and summary["skipped"] == []
    bao = summary["metrics"]["pseudo_miou_bao"]
    assert bao["mean"] == pytest.approx(0.41) and bao["std"] == pytest.approx(statistics.stdev([0.40, 0.41, 0.42]))
    assert bao["per_seed"] == {"0": pytest.approx(0.40), "1": pytest.approx(0.41), "2": pytest.approx(0.42)}
    assert summary["metrics"]["per.a"]["mean"] == 1.0  # nested metrics are flattened
    table = markdown_table(summary)
    assert "| pseudo_miou_bao | 0.4100 ± 0.0100 |" in table and "per.a" not in table  # headline rows only


def test_experiments_changing_other_params_or_unfinished_are_not_mixed_in():
    exp_show = _captured()
    experiments = exp_show[1]["experiments"]
    other = copy.deepcopy(experiments[0])
    other["name"] = "lr-sweep"
    other["revs"][0]["data"]["params"]["params.yaml"]["data"]["lr"] = 0.5
    failed = copy.deepcopy(experiments[1])
    failed["name"], failed["executor"]["state"] = "broken", "failed"
    experiments += [other, failed]
    summary = summarize(exp_show)
    assert summary["seeds"] == [0, 1, 2] and len(summary["experiments"]) == 3
    assert {item["name"]: item["why"] for item in summary["skipped"]} == {
        "lr-sweep": "params other than seed differ: lr", "broken": "state failed, 3 metrics"}
    table = markdown_table(summary)  # the failed seed run is named; another experiment is not a seed run
    assert "Not counted: broken (state failed, 3 metrics)" in table and "lr-sweep" not in table
    queued = copy.deepcopy(experiments[1])
    queued["name"], queued["executor"]["state"] = "later", "queued"
    experiments.append(queued)
    with pytest.raises(SeedSummaryError, match="1 experiment.* still queued or running .*later.*--wait"):
        summarize(exp_show)


def test_where_summarises_the_seeds_of_a_variant_only():
    exp_show = _captured()
    experiments = exp_show[1]["experiments"]
    variants = []
    for seed, value in [(0, 0.30), (1, 0.34)]:
        variant = copy.deepcopy(experiments[seed])
        variant["name"] = f"lr-{seed}"
        variant["revs"][0]["data"]["params"]["params.yaml"]["data"]["lr"] = 0.5
        variant["revs"][0]["data"]["metrics"]["metrics/m.json"]["data"]["pseudo_miou_bao"] = value
        variants.append(variant)
    experiments += variants
    summary = summarize(exp_show, {"lr": 0.5})
    assert sorted(summary["experiments"]) == ["lr-0", "lr-1"] and summary["metrics"]["pseudo_miou_bao"]["mean"] == pytest.approx(0.32)
    assert {item["name"] for item in summary["skipped"]} == {experiment["name"] for experiment in experiments[:3]}
    assert summarize(exp_show)["seeds"] == [0, 1, 2]  # without it the variant stays out
    with pytest.raises(SeedSummaryError, match="--where nope: no such key"):
        summarize(exp_show, {"nope": 1})


def test_a_seed_with_a_non_finite_metric_is_named_not_averaged_away():
    """A diverged seed must show: it is left out of the statistics and listed in the table."""
    exp_show = _captured()
    diverged = exp_show[1]["experiments"][1]
    metrics_file = next(iter(diverged["revs"][0]["data"]["metrics"].values()))
    metrics_file["data"]["pseudo_miou_bao"] = float("nan")
    summary = summarize(exp_show)
    assert len(summary["seeds"]) == 2 and summary["metrics"]["pseudo_miou_bao"]["n"] == 2
    [skipped] = summary["skipped"]
    assert skipped["name"] == diverged["name"] and "non-finite metrics (diverged?): pseudo_miou_bao" in skipped["why"]
    table = markdown_table(summary)
    assert "(2 runs)" in table and f"Not counted: {diverged['name']} (non-finite" in table


def test_no_experiment_is_a_clear_error():
    exp_show = _captured()
    exp_show[1]["experiments"] = None
    with pytest.raises(SeedSummaryError, match=r"no finished experiment .*`dvc exp run --queue -S 'seed=range\(0,5\)'"):
        summarize(exp_show)


TOY_STAGE = """\
import json, os, yaml
params = yaml.safe_load(open("params.yaml"))
os.makedirs("metrics", exist_ok=True)
json.dump({"pseudo_miou_bao": 0.5 + 0.01 * params["seed"], "val_miou": 0.3}, open("metrics/m.json", "w"))
"""
TOY_DVC = """\
stages:
  train:
    cmd: python train.py
    deps: [train.py]
    params: [seed, lr]
    outs:
      - metrics/m.json:
          cache: false
metrics:
  - metrics/m.json
"""


def _run(cmd: list[str], cwd: Path) -> str:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{cmd}: {result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return result.stdout


def test_a_real_queue_of_two_seeds_is_summarised(tmp_path):
    """The README's commands on a one-stage toy project: the grid form and the queue work in DVC 3.67."""
    (tmp_path / "train.py").write_text(TOY_STAGE)
    (tmp_path / "dvc.yaml").write_text(TOY_DVC)
    (tmp_path / "params.yaml").write_text("seed: 0\nlr: 0.1\n")
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "toy"]):
        _run(cmd, tmp_path)
    _run(["git", "config", "user.email", "t@t"], tmp_path)
    _run(["git", "config", "user.name", "t"], tmp_path)
    queued = _run(["dvc", "exp", "run", "--queue", "-S", "seed=range(0,2)"], tmp_path)
    assert queued.count("Queued experiment") == 2
    _run(["dvc", "queue", "start"], tmp_path)
    env_path = str(REPO)
    result = subprocess.run([sys.executable, "-m", "bao.seeds", "--wait", "--poll", "2", "--out", "s.json", "--table", "s.md"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300, env={**__import__("os").environ, "PYTHONPATH": env_path})
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["seeds"] == [0, 1]
    assert summary["metrics"]["pseudo_miou_bao"]["mean"] == pytest.approx(0.505)
    assert summary["metrics"]["val_miou"]["std"] == pytest.approx(0.0)
    assert "| pseudo_miou_bao | 0.5050 ± 0.0071 |" in (tmp_path / "s.md").read_text()
