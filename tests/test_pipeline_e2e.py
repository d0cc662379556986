"""The real DAG, run with `dvc repro` in a throw-away copy of the repo with tiny params."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from pipeline_utils import TINY_OVERRIDES, declared_outputs, make_repo_copy, run


@pytest.fixture(scope="module")
def repro(tmp_path_factory) -> Path:
    repo = make_repo_copy(tmp_path_factory.mktemp("pipeline"), TINY_OVERRIDES)
    run(["dvc", "repro"], repo, timeout=1200)
    return repo


def _metrics(repo: Path, path: str) -> dict:
    return json.loads((repo / path).read_text())


def _is_fraction(value) -> bool:
    return isinstance(value, float) and math.isfinite(value) and 0.0 <= value <= 1.0


def test_every_declared_output_exists(repro):
    outputs = declared_outputs(repro)
    assert set(outputs) == {"prepare", "train_cam", "train_bao", "pseudo_label", "train_seg", "evaluate"}
    for name, paths in outputs.items():
        for path in paths:
            assert (repro / path).exists(), f"stage {name}: declared output {path} missing"


def test_metrics_are_sane(repro):
    prepare = _metrics(repro, "metrics/prepare.json")
    assert prepare["num_images"] == {"train": 24, "val": 8}
    cam = _metrics(repro, "dvclive/train_cam/metrics.json")
    assert math.isfinite(cam["final_loss"]) and _is_fraction(cam["val_map"])
    bao = _metrics(repro, "dvclive/train_bao/metrics.json")
    assert math.isfinite(bao["final_loss_bal"]) and bao["final_loss"] > 0
    pseudo = _metrics(repro, "metrics/pseudo_label.json")
    for key in ("pseudo_miou_bao", "baseline_best_miou", "baseline_worst_miou", "baseline_mid_miou"):
        assert _is_fraction(pseudo[key]), key
    assert pseudo["baseline_best_t"] in TINY_OVERRIDES["pseudo_label"]["thresholds"]
    assert pseudo["baseline_best_miou"] >= pseudo["baseline_worst_miou"]
    assert set(pseudo["bao_per_class_iou"]) == {"background", "disc", "square", "triangle"}
    evaluation = _metrics(repro, "metrics/evaluate.json")
    assert _is_fraction(evaluation["val_miou"]) and _is_fraction(evaluation["val_pixel_accuracy"])
    # the evaluate stage re-scores the pseudo-label PNGs from disk (CRF-refined when the CRF is on)
    assert _is_fraction(pseudo["pseudo_miou_bao_crf"])
    assert pseudo["crf_gain"] == pytest.approx(pseudo["pseudo_miou_bao_crf"] - pseudo["pseudo_miou_bao"])
    assert evaluation["pseudo_label_miou"] == pytest.approx(pseudo["pseudo_miou_bao_crf"], abs=1e-9)


def test_pseudo_labels_and_predictions_are_palette_pngs(repro):
    manifest = pd.read_parquet(repro / "data/prepared/manifest.parquet")
    train_ids = set(manifest.loc[manifest["split"] == "train", "image_id"])
    pngs = sorted((repro / "results/pseudo_labels").glob("*.png"))
    assert {p.stem for p in pngs} == train_ids
    with Image.open(pngs[0]) as image:
        assert image.mode == "P" and image.size == (64, 64)
    assert len(list((repro / "results/val_predictions").glob("*.png"))) == 8
    sweep = pd.read_csv(repro / "plots/threshold_sweep.csv")
    assert list(sweep["threshold"]) == TINY_OVERRIDES["pseudo_label"]["thresholds"]
    assert sweep["bao_miou"].nunique() == 1  # BAO's line: one value, the threshold-free mIoU
    pseudo = json.loads((repro / "metrics/pseudo_label.json").read_text())
    assert sweep["bao_miou"].iloc[0] == pytest.approx(pseudo["pseudo_miou_bao"])


def test_per_class_csvs_and_gallery(repro):
    for name in ("bao", "baseline_best_t"):
        table = pd.read_csv(repro / f"plots/per_class_iou/{name}.csv")
        assert list(table["class"]) == ["background", "disc", "square", "triangle"]
        assert table["iou"].dropna().between(0, 1).all()
    with Image.open(repro / "results/gallery.png") as image:
        assert image.format == "PNG" and image.size[1] > image.size[0] / 3  # 3 rows of 6 panels


def test_dvc_plots_show_renders_loss_curves_sweep_bars_and_gallery(repro):
    shown = json.loads(run(["dvc", "plots", "show", "--json"], repro).stdout)
    assert not shown.get("errors"), shown.get("errors")
    ids = set(shown["data"])
    assert {"threshold_sweep", "per_image_best_t", "per_class_iou", "results/gallery.png", "learning_rate"} <= ids
    for stage in ("train_cam", "train_bao", "train_seg"):  # dvc.yaml's titled plots of the DVCLive curves
        content = shown["data"][f"{stage}_loss"][0]["content"]
        assert content["data"]["values"] and content["encoding"]["x"]["title"] == "epoch (0 = first)", stage
    # each DVCLive file is drawn once, by a titled plot, not again by DVC's untitled default
    assert not [plot for plot in ids if plot.startswith("dvclive/") or plot.endswith(".csv")], sorted(ids)
    bars = shown["data"]["per_class_iou"][0]["content"]
    assert bars["mark"]["type"] == "bar" and {row["filename"] for row in bars["data"]["values"]} == {"bao.csv", "baseline_best_t.csv"}


def test_metrics_files_and_exp_show_open_with_the_results(repro):
    assert list(_metrics(repro, "metrics/pseudo_label.json"))[:2] == ["pseudo_miou_bao", "baseline_best_miou"]
    assert list(_metrics(repro, "metrics/evaluate.json"))[0] == "val_miou"
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repro).stdout)
    files = list(shown[0]["data"]["metrics"])
    assert files[:2] == ["metrics/pseudo_label.json", "metrics/evaluate.json"] and files[-1] == "metrics/prepare.json"
    assert not (repro / "results/.pseudo_labels.commit").exists()  # committed, nothing left staged


def test_exp_run_reruns_only_bao_and_downstream_and_metrics_diff_shows_it(repro):
    """Runs last: it changes the workspace of the shared copy."""
    run(["git", "add", "-A"], repro)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "baseline run"], repro)
    assert "up to date" in run(["dvc", "status"], repro).stdout
    out = run(["dvc", "exp", "run", "-S", "bao.lr=1e-4"], repro, timeout=1200).stdout
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == {"train_bao", "pseudo_label", "train_seg", "evaluate"}
    diff = json.loads(run(["dvc", "metrics", "diff", "--json"], repro).stdout)
    assert "dvclive/train_bao/metrics.json" in diff
    assert "metrics/prepare.json" not in diff


def test_exp_run_switches_the_alignment_of_the_pseudo_label_stage(repro):
    """Runs after the bao.lr experiment: ``-S pseudo_label.align=official`` redoes the stage that
    resizes maps, and those downstream only where the labels changed (on these tiny networks they
    may not); nothing is retrained, and the pseudo-label metrics change."""
    out = run(["dvc", "exp", "run", "-S", "pseudo_label.align=official"], repro, timeout=1200).stdout
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert "pseudo_label" in ran and ran <= {"pseudo_label", "train_seg", "evaluate"}
    diff = json.loads(run(["dvc", "metrics", "diff", "--json"], repro).stdout)
    assert "metrics/pseudo_label.json" in diff


def test_exp_run_trains_deeplab_on_the_threshold_labels(repro):
    """Runs after the alignment experiment: ``-S train_seg.labels=threshold`` retrains DeepLab on the
    CAM labels at train_seg.threshold that pseudo_label already wrote, and nothing upstream."""
    labels = sorted(path.name for path in (repro / "results/threshold_labels").glob("*.png"))
    assert labels == sorted(path.name for path in (repro / "results/pseudo_labels").glob("*.png"))
    out = run(["dvc", "exp", "run", "-S", "train_seg.labels=threshold"], repro, timeout=1200).stdout
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == {"train_seg", "evaluate"}
    assert _metrics(repro, "metrics/evaluate.json")["train_seg_labels"] == "threshold"
