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


class BaoAround(torch.nn.Module):
    """BAO-network stand-in around a CAM network (``cam_net``), whose maps it returns."""

    def __init__(self, cam_net: torch.nn.Module):
        super().__init__()
        self.cam_net, self.normalization, self.feature_geometry = cam_net, cam_net.normalization, cam_net.feature_geometry

    def forward(self, images, labels=None, refine=False):
        return self.cam_net(images, labels, refine)


def _tagged(value: float) -> ShiftedSquareNet:
    net = ShiftedSquareNet()
    net.register_buffer("tag", torch.tensor([value]))  # networks with different weights
    return net


@pytest.mark.parametrize("distinct", [False, True], ids=["frozen CAM network", "retrained CAM network"])
def test_the_pseudo_label_pass_sweeps_the_cam_network_and_measures_each_alignment_once(tmp_path, monkeypatch, distinct):
    """BAO's pass also sweeps the CAM network and saves its labels at one t. Around the same frozen
    CAM network its CAMs come from BAO's own pass and the alignment is measured once for both; a
    retrained one runs its own pass, each network measured on its own. Either way the sweep is the
    one the CAM network alone gives (``threshold_sweep``)."""
    from bao.config import PseudoLabelConfig
    from bao.data.manifest import read_manifest
    from bao.infer import pipeline
    from test_alignment import BATCHES_OF_TWO, CRF_OFF, label_offsets

    label_offsets(tmp_path, (75, 101), (64,), "geometric")  # prepares the square dataset
    manifest = read_manifest(tmp_path / "prepared_75x101")
    cfg = PseudoLabelConfig(scales=(64, 96), flip=True, thresholds=(0.3, 0.5, 0.7), align="calibrated")
    alone = pipeline.threshold_sweep(_tagged(1.0), manifest, cfg, torch.device("cpu"), runtime=BATCHES_OF_TWO)
    measured = []
    real_calibrate = pipeline.calibrate_shift
    monkeypatch.setattr(pipeline, "calibrate_shift", lambda *a, **kw: measured.append(1) or real_calibrate(*a, **kw))
    cam_net = _tagged(1.0)
    bao_net = BaoAround(_tagged(0.0) if distinct else cam_net)
    out, labels_out = tmp_path / "bao", tmp_path / "threshold"
    out.mkdir(), labels_out.mkdir()
    results = pipeline.bao_pseudo_labels(bao_net, manifest, cfg, CRF_OFF, device=torch.device("cpu"), out_dir=out, runtime=BATCHES_OF_TWO,
                                         cam_net=cam_net, sweep=True, threshold_labels_out=labels_out, label_threshold=0.5)
    assert len(measured) == (2 if distinct else 1)
    assert results["alignment"] == results["sweep"]["alignment"] == alone["alignment"]
    assert results["sweep"] == alone
    assert sorted(path.name for path in labels_out.glob("*.png")) == sorted(path.name for path in out.glob("*.png")) == ["a.png", "b.png", "c.png"]
    with pytest.raises(ValueError, match="needs the CAM network"):
        pipeline.bao_pseudo_labels(bao_net, manifest, cfg, CRF_OFF, device=torch.device("cpu"), out_dir=out, sweep=True)
