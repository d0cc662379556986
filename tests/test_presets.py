"""Presets: partial params files merged over params.yaml (nested keys override, the rest stays)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from bao.config import ParamsError, load_params
from bao.presets import apply_preset, main, overrides_from_set

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "presets").glob("*.yaml"))


@pytest.fixture
def params_file(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    return tmp_path / "params.yaml"


def leaves(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= leaves(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_nested_keys_override_and_everything_else_stays(params_file, tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("bao:\n  epochs: 7\n  resize_long: [10, 20]\npseudo_label:\n  scales: [32, 48]\n")
    before = leaves(yaml.safe_load(params_file.read_text()))
    apply_preset(preset, params_file=params_file)
    text = params_file.read_text()
    after = leaves(yaml.safe_load(text))
    changed = {key for key in before if before[key] != after[key]}
    assert changed == {"bao.epochs", "bao.resize_long", "pseudo_label.scales"}
    assert after["bao.epochs"] == 7 and after["pseudo_label.scales"] == [32, 48]
    assert "  scales: [32, 48]" in text  # lists stay on one line, as params.yaml writes them
    assert "# constant | poly: the official code keeps AdamW's lr constant" in text  # comments survive
    assert "ema_period: null" in text  # a null stays spelled null
    assert load_params(params_file).bao.epochs == 7


def test_set_assignments_come_after_the_preset(params_file, tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("seed: 3\ndata:\n  dataset: voc\n")
    apply_preset(preset, params_file=params_file, assignments=["data.root=/data/VOC2012", "seed=4"])
    params = load_params(params_file)
    assert (params.seed, params.data.dataset, params.data.root) == (4, "voc", "/data/VOC2012")
    assert overrides_from_set(["a.b.c=[1, 2]"]) == {"a": {"b": {"c": [1, 2]}}}


@pytest.mark.parametrize(
    "text,message",
    [
        ("bao:\n  epoch: 3\n", "bao.epoch is not a key"),
        ("bao: 3\n", "bao is a section"),
        ("seed:\n  x: 1\n", "seed is a value"),
        ("bao:\n  epochs: 0\n", "bao.epochs"),  # the merged params are validated
        ("- 1\n", "non-empty mapping"),
    ],
)
def test_a_bad_preset_names_the_key_and_leaves_params_as_they_were(params_file, tmp_path, text, message):
    preset = tmp_path / "bad.yaml"
    preset.write_text(text)
    original = params_file.read_bytes()
    with pytest.raises(ParamsError, match=message):
        apply_preset(preset, params_file=params_file)
    assert params_file.read_bytes() == original
    assert sorted(p.name for p in params_file.parent.iterdir()) == ["bad.yaml", "params.yaml"]  # no temp file left


def test_the_command_line_reports_errors_with_status_2(params_file, tmp_path, capsys):
    assert main([str(tmp_path / "missing.yaml"), "--params", str(params_file)]) == 2
    assert "missing.yaml: preset not found" in capsys.readouterr().err
    assert main([str(PRESETS[0]), "--params", str(params_file), "--set", "no_equals_sign"]) == 2


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_every_shipped_preset_applies_to_params_yaml(params_file, preset):
    assert PRESETS, "presets/ holds the shipped presets"
    assert main([str(preset), "--params", str(params_file), "--set", "data.root=/somewhere/VOC2012"]) == 0
    params = load_params(params_file)
    assert params.data.root == "/somewhere/VOC2012"
    shipped = leaves(yaml.safe_load(preset.read_text()))
    merged = leaves(yaml.safe_load(params_file.read_text()))
    assert all(merged[key] == value for key, value in shipped.items())
