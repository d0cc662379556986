"""The mask-free alignment calibration (``bao.infer.calibrate``) on networks whose response is known."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from bao.infer.calibrate import calibrate_shift, calibration_scale, mirror_disagreement, shifted_geometry  # noqa: E402
from bao.models.geometry import FeatureGeometry  # noqa: E402
from test_alignment import BrightSquareNet, ShiftedSquareNet  # noqa: E402


def _images() -> list[torch.Tensor]:
    """Off-centre squares (a centred one would look the same in its mirror), two image sizes."""
    images = []
    for (height, width), (top, left, side) in [((96, 96), (20, 14, 30)), ((80, 120), (30, 70, 24)), ((96, 96), (50, 40, 20))]:
        image = torch.zeros(3, height, width, dtype=torch.float32)
        image[:, top:top + side, left:left + side] = 1.0
        images.append(image)
    return images


def _forward(net):
    return lambda batch, labels: {"cams": net(batch, labels)["cams"]}


@pytest.mark.parametrize(("net", "expected"), [(BrightSquareNet(), 0.0), (ShiftedSquareNet(), -ShiftedSquareNet.SHIFT)])
def test_the_shift_is_where_the_network_responds(net, expected):
    images = _images()
    labels = torch.ones(len(images), 1)
    calibration = calibrate_shift(_forward(net), images, labels, scale=128, traced=net.feature_geometry, batch_size=2)
    assert abs(calibration.shift - expected) <= 0.5, calibration
    assert calibration.disagreement <= calibration.disagreement_traced
    if expected:
        assert calibration.disagreement < 0.5 * calibration.disagreement_traced
    summary = calibration.summary()
    assert summary["mode"] == "calibrated" and summary["cell_shift_px"] == calibration.shift and summary["images"] == 3
    assert not calibration.at_limit and calibration.limit == 16.0


def test_mirror_disagreement_is_zero_on_the_right_centres_only():
    """Cells at 16*o + 7.5 of a 96-px input mirror onto cells (cell o onto 5 - o): the mirror's map
    of a mirror-equivariant network is the map flipped, and drawn there the two agree exactly."""
    maps = torch.rand(2, 6, 6, generator=torch.Generator().manual_seed(0))
    mirror_maps = maps.flip(-1)
    at = lambda offset: mirror_disagreement(maps, mirror_maps, image_size=(96, 96), input_size=(96, 96),  # noqa: E731
                                            geometry=FeatureGeometry((16.0, 16.0), (7.5, offset)))
    assert at(7.5) < 1e-10
    assert at(0.0) > 1e-3 and at(15.0) > 1e-3


def test_shifted_geometry_moves_only_the_named_axes():
    traced = lambda size: FeatureGeometry((16.0, 8.0), (15.0, 3.5))  # noqa: E731
    assert shifted_geometry(traced, -12.0)((64, 64)) == FeatureGeometry((16.0, 8.0), (3.0, -8.5))
    assert shifted_geometry(traced, 2.0, axes=(1,))((64, 64)) == FeatureGeometry((16.0, 8.0), (15.0, 5.5))


def test_the_calibration_scale_is_the_middle_one():
    assert calibration_scale([192, 96, 144]) == 144
    assert calibration_scale([256, 512]) == 256
    assert calibration_scale([320]) == 320


def test_the_pseudo_label_stage_reuses_the_sweeps_calibration_for_the_same_cam_network(tmp_path, monkeypatch):
    """threshold_sweep measures the CAM network's alignment; a BAO network around the same frozen
    CAM network is given it (``reuse_alignment``) and draws its maps with it, without measuring again;
    a sweep without the fields (or with a shift beyond its limit) is not reused."""
    from bao.config import PseudoLabelConfig
    from bao.data.manifest import read_manifest
    from bao.infer import pipeline
    from test_alignment import BATCHES_OF_TWO, CRF_OFF, label_offsets

    label_offsets(tmp_path, (75, 101), (64,), "geometric")  # prepares the square dataset
    manifest = read_manifest(tmp_path / "prepared_75x101")
    cfg = PseudoLabelConfig(scales=(64, 96), flip=True, thresholds=(0.5,), align="calibrated")
    measured = []
    real_calibrate = pipeline.calibrate_shift
    monkeypatch.setattr(pipeline, "calibrate_shift", lambda *a, **kw: measured.append(1) or real_calibrate(*a, **kw))
    sweep = pipeline.threshold_sweep(ShiftedSquareNet(), manifest, cfg, torch.device("cpu"), runtime=BATCHES_OF_TWO)
    assert len(measured) == 1 and sweep["alignment"]["mode"] == "calibrated"
    bao_net = ShiftedSquareNet()
    assert pipeline.reuse_alignment(bao_net, sweep["alignment"], cfg)
    out = tmp_path / "labels"
    out.mkdir()
    results, _ = pipeline.bao_pseudo_labels(bao_net, manifest, cfg, CRF_OFF, device=torch.device("cpu"), out_dir=out, runtime=BATCHES_OF_TWO)
    assert len(measured) == 1 and results["alignment"] == sweep["alignment"]
    old = {key: value for key, value in sweep["alignment"].items() if key != "limit_px"}
    beyond = {**sweep["alignment"], "cell_shift_px": 40.0}
    assert not pipeline.reuse_alignment(ShiftedSquareNet(), old, cfg) and not pipeline.reuse_alignment(ShiftedSquareNet(), beyond, cfg)
    assert not pipeline.reuse_alignment(ShiftedSquareNet(), sweep["alignment"], cfg.model_copy(update={"scales": (96, 128)}))
