"""The two test modules that also print README tables when run as scripts
(`python tests/test_geometry.py`, `python tests/test_alignment.py`) run, as a user would run them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NUMBER = r"([+-]\d+\.\d+)"


def _script_output(name: str) -> str:
    result = subprocess.run([sys.executable, f"tests/{name}"], cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "nan" not in result.stdout.lower(), result.stdout
    return result.stdout


def test_geometry_table_prints_every_family_within_a_pixel():
    rows = re.findall(rf"^(\S+): stated offset {NUMBER}, measured {NUMBER} / {NUMBER}$", _script_output("test_geometry.py"), re.M)
    assert [row[0] for row in rows] == ["tf_efficientnet_lite0", "resnet18", "tf_mobilenetv3_small_minimal_100",
                                        "deit_tiny_patch16_224", "conformer_tiny_patch16"]
    for name, stated, measured_y, measured_x in rows:
        assert abs(float(measured_y) - float(stated)) <= 1 and abs(float(measured_x) - float(stated)) <= 1, name


def test_alignment_table_prints_every_image_and_scale():
    text = _script_output("test_alignment.py")
    pattern = rf"^(\S+) scales\s+(\S+) \| official: \({NUMBER}, {NUMBER}\) \| official \+flip: \({NUMBER}, {NUMBER}\) \| geometric: \({NUMBER}, {NUMBER}\) \| geometric \+flip: \({NUMBER}, {NUMBER}\)$"
    rows = re.findall(pattern, text, re.M)
    assert [(row[0], row[1]) for row in rows] == [(size, scales) for size, all_scales in
                                                  [("75x101", ["64", "96", "144"]), ("96x96", ["64", "96", "144"]), ("375x500", ["256", "512", "768"])]
                                                  for scales in [*all_scales, ",".join(all_scales)]]
    for size, scales, *offsets in rows:
        geometric_flip = [abs(float(value)) for value in offsets[6:8]]
        official_flip_y = float(offsets[2])
        if scales.count(",") == 2:  # all scales merged: geometric within 1 px, the official resize off by several
            assert max(geometric_flip) <= 1.0 and official_flip_y > 3.0, (size, offsets)
