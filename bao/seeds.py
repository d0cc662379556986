"""Seed variance from DVC experiments: mean +- std of every metric over a seed sweep.

    dvc exp run --queue -S 'seed=range(0,5)'   # five experiments, seeds 0..4, same data
    dvc queue start                            # runs them (one worker; `-j N` for more)
    python -m bao.seeds --wait                 # waits for the queue, then the table and JSON

It reads ``dvc exp show --json`` and keeps the experiments of the current commit whose params
differ from the commit's only in ``seed`` (other experiments are listed as skipped), so a sweep
of anything else never mixes into the figures. A sweep that also sets other params names them:

    dvc exp run --queue -S 'seed=range(0,5)' -S train_seg.labels=threshold
    python -m bao.seeds --where train_seg.labels=threshold --out results/seed_summary_threshold.json ...

The demo data has its own seed
(``data.synthetic.seed``), so only training varies.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from bao.io import atomic_path, write_json

SEED_KEY = "seed"
HEADLINE = ("pseudo_miou_bao", "baseline_mid_miou", "baseline_best_miou", "per_image_oracle_miou", "bao_minus_mid_baseline", "bao_minus_best_baseline", "val_miou", "pseudo_label_miou", "pseudo_miou_bao_crf")
PENDING = {"queued", "running"}


class SeedSummaryError(RuntimeError):
    """The experiments cannot be summarised (none, still running, failed); the message says why."""


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _params(data: dict) -> dict:
    return {f"{file}:{key}": value for file, entry in (data.get("params") or {}).items()
            for key, value in _flatten(entry.get("data") or {}).items()}


def _metrics(data: dict) -> tuple[dict, list[str]]:
    """(numeric metrics by key, the keys whose value is NaN or inf); a key found in two files is
    named ``file:key``."""
    per_file = {file: _flatten(entry.get("data") or {}) for file, entry in (data.get("metrics") or {}).items()}
    counts: dict[str, int] = {}
    for values in per_file.values():
        for key in values:
            counts[key] = counts.get(key, 0) + 1
    metrics, non_finite = {}, []
    for file, values in per_file.items():
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                name = key if counts[key] == 1 else f"{file}:{key}"
                if math.isfinite(value):
                    metrics[name] = float(value)
                else:
                    non_finite.append(name)
    return metrics, sorted(non_finite)


def experiment_records(exp_show: list) -> tuple[dict, list[dict]]:
    """(the commit's params, one record per experiment) from ``dvc exp show --json``."""
    commits = [entry for entry in exp_show if entry.get("rev") != "workspace"]
    if not commits:
        raise SeedSummaryError("dvc exp show lists no commit: commit the pipeline, then queue the seeds")
    baseline = commits[0]
    records = []
    for experiment in baseline.get("experiments") or []:
        revision = (experiment.get("revs") or [{}])[0]
        data = revision.get("data") or {}
        state = ((experiment.get("executor") or {}).get("state") or "success").lower()
        if revision.get("error"):
            state = "failed"
        metrics, non_finite = _metrics(data)
        records.append({
            "name": experiment.get("name") or revision.get("name") or revision.get("rev", "")[:7],
            "state": state, "timestamp": data.get("timestamp") or "", "params": _params(data),
            "metrics": metrics, "non_finite": non_finite,
        })
    return _params(baseline.get("data") or {}), records


def _seed_of(params: dict):
    return next((value for key, value in params.items() if key.endswith(f":{SEED_KEY}")), None)


def summarize(exp_show: list, where: dict[str, object] | None = None) -> dict:
    """Mean, std (n - 1), min, max and per-seed values of every metric over the seed sweep.

    ``where``: params (dotted keys of params.yaml) the sweep set besides the seed, e.g.
    ``{"train_seg.labels": "threshold"}`` for `dvc exp run --queue -S 'seed=range(0,5)' -S
    train_seg.labels=threshold`; the experiments summarised differ from the commit in those and the seed only."""
    base_params, records = experiment_records(exp_show)
    pending = [record["name"] for record in records if record["state"] in PENDING]
    if pending:
        raise SeedSummaryError(f"{len(pending)} experiment(s) still queued or running ({', '.join(pending)}): "
                               "wait for `dvc queue status` to show them done, or pass --wait")
    fixed = {key: value for key, value in base_params.items() if not key.endswith(f":{SEED_KEY}")}
    for key, value in (where or {}).items():
        matches = [name for name in fixed if name.split(":", 1)[-1] == key]
        if not matches:
            raise SeedSummaryError(f"--where {key}: no such key in the commit's params")
        fixed.update(dict.fromkeys(matches, value))
    chosen: dict = {}
    skipped = []
    for record in sorted(records, key=lambda r: r["timestamp"]):
        others = {key: value for key, value in record["params"].items() if not key.endswith(f":{SEED_KEY}")}
        if others != fixed and record["params"]:  # another experiment, not a seed of this configuration
            changed = sorted(key.split(":", 1)[1] for key in set(others) | set(fixed) if others.get(key) != fixed.get(key))
            skipped.append({"name": record["name"], "why": f"params other than seed differ: {', '.join(changed)}", "seed_run": False})
        elif record["state"] != "success" or not record["metrics"]:
            skipped.append({"name": record["name"], "why": f"state {record['state']}, {len(record['metrics'])} metrics", "seed_run": True})
        elif record["non_finite"]:  # a diverged run is not averaged away: it is named as not counted
            skipped.append({"name": record["name"], "why": f"non-finite metrics (diverged?): {', '.join(record['non_finite'])}", "seed_run": True})
        else:
            seed = _seed_of(record["params"])
            if seed in chosen:
                skipped.append({"name": chosen[seed]["name"], "why": f"seed {seed} ran again later ({record['name']})", "seed_run": True})
            chosen[seed] = record
    if not chosen:
        raise SeedSummaryError("no finished experiment of this commit differs only in seed: "
                               "run `dvc exp run --queue -S 'seed=range(0,5)'` and `dvc queue start` first")
    runs = [chosen[seed] for seed in sorted(chosen)]
    names = sorted(set().union(*(run["metrics"] for run in runs)))
    metrics = {}
    for name in names:
        values = [run["metrics"][name] for run in runs if name in run["metrics"]]
        metrics[name] = {
            "mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "min": min(values), "max": max(values), "n": len(values),
            "per_seed": {str(seed): chosen[seed]["metrics"].get(name) for seed in sorted(chosen)},
        }
    return {"seeds": sorted(chosen), "experiments": [run["name"] for run in runs], "metrics": metrics, "skipped": skipped}


def markdown_table(summary: dict, rows: tuple[str, ...] = HEADLINE) -> str:
    """The headline metrics (those present; every metric when none is) as mean +- std."""
    names = [name for name in rows if name in summary["metrics"]] or list(summary["metrics"])
    seeds = ", ".join(map(str, summary["seeds"]))
    runs = len(summary["seeds"])
    lines = [f"Seeds {seeds} ({runs} runs)", "", "| metric | mean ± std | min | max | n |", "|---|---|---|---|---|"]
    for name in names:
        entry = summary["metrics"][name]
        std = "n/a" if entry["std"] is None else f"{entry['std']:.4f}"
        lines.append(f"| {name} | {entry['mean']:.4f} ± {std} | {entry['min']:.4f} | {entry['max']:.4f} | {entry['n']} |")
    not_counted = [item for item in summary["skipped"] if item["seed_run"]]  # seed runs left out, not other experiments
    if not_counted:
        lines += ["", "Not counted: " + "; ".join(f"{item['name']} ({item['why']})" for item in not_counted)]
    return "\n".join(lines) + "\n"


def read_exp_show(cwd: str | Path = ".") -> list:
    result = subprocess.run(["dvc", "exp", "show", "--json"], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SeedSummaryError(f"dvc exp show --json failed: {result.stderr.strip()[-2000:]}")
    return json.loads(result.stdout)


def wait_for_queue(cwd: str | Path = ".", poll_s: float = 10.0) -> list:
    """``dvc exp show --json`` once no experiment of this commit is queued or running."""
    while True:
        exp_show = read_exp_show(cwd)
        pending = [r["name"] for r in experiment_records(exp_show)[1] if r["state"] in PENDING]
        if not pending:
            return exp_show
        time.sleep(poll_s)


def _key_value(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` with VALUE read as YAML, as ``dvc exp run -S`` reads it."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SeedSummaryError(f"--where {text!r}: expected KEY=VALUE")
    return key, yaml.safe_load(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp-show-json", help="a saved `dvc exp show --json` (default: run it here)")
    parser.add_argument("--wait", action="store_true", help="wait until no experiment is queued or running")
    parser.add_argument("--poll", type=float, default=10.0, help="seconds between looks at the queue with --wait")
    parser.add_argument("--out", default="results/seed_summary.json", help="every metric's mean, std, min, max, per-seed values")
    parser.add_argument("--table", default="results/seed_summary.md", help="the headline metrics as a Markdown table")
    parser.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                        help="a param the sweep also set (as its -S), e.g. train_seg.labels=threshold; repeatable")
    args = parser.parse_args(argv)
    try:
        where = dict(_key_value(item) for item in args.where)
        if args.exp_show_json:
            exp_show = json.loads(Path(args.exp_show_json).read_text())
        else:
            exp_show = wait_for_queue(poll_s=args.poll) if args.wait else read_exp_show()
        summary = summarize(exp_show, where)
    except SeedSummaryError as error:
        print(f"bao.seeds: {error}", file=sys.stderr)
        return 1
    table = markdown_table(summary)
    write_json(args.out, summary)
    with atomic_path(args.table) as temp:  # creates the table's directory, like write_json
        temp.write_text(table)
    print(table, end="")
    for item in summary["skipped"]:
        print(f"skipped {item['name']}: {item['why']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
