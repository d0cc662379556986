"""BAO's fixes for real photographs: the CAM network's own lr (or a freeze), the target-agreement
figure, and the diagnosis metrics of the pseudo_label stage (hand-computed on tiny maps)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from bao.config import ParamsError, load_params
from bao.infer.diagnose import Diagnosis, shift_grid, shifted_counts, translations
from bao.infer.pipeline import bao_pseudo_labels, same_weights
from bao.models import create_bao_net
from bao.train.bao import TargetAgreement, bao_param_groups, train_bao_net
from bao.train.cam import train_cam_net
from bao.train.common import save_model
from bao.train.engine import LoopState

from pipeline_utils import RecordingLive, tiny_synthetic_manifest

PARAMS = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
TINY_LOADER = dict(epochs=1, batch_size=4, crop_size=64, resize_long=(56, 72))
TINY_MODEL = PARAMS.model.model_copy(update={"backbone": "test_resnet", "pretrained": False})


def test_cam_lr_null_is_one_group_and_a_value_is_its_own_group():
    student = create_bao_net(TINY_MODEL, 3)
    assert bao_param_groups(student, PARAMS.bao.model_copy(update={"cam_lr": None})) is None
    groups = bao_param_groups(student, PARAMS.bao.model_copy(update={"lr": 1e-3, "cam_lr": 5e-5}))
    assert [group["lr"] for group in groups] == [1e-3, 5e-5]
    head, cam = ({id(p) for p in group["params"]} for group in groups)
    assert cam == {id(p) for p in student.cam_net.parameters()}
    assert head == {id(p) for p in student.parameters()} - cam and head
    assert not student.cam_frozen


def test_cam_lr_zero_freezes_the_cam_network_bn_included():
    student = create_bao_net(TINY_MODEL, 3)
    groups = bao_param_groups(student, PARAMS.bao.model_copy(update={"cam_lr": 0.0}))
    assert len(groups) == 1 and {id(p) for p in groups[0]["params"]} == {id(p) for n, p in student.named_parameters() if not n.startswith("cam_net.")}
    student.train()
    assert student.training and student.am_head.training
    assert not any(module.training for module in student.cam_net.modules())  # BN keeps its running statistics
    assert not any(p.requires_grad for p in student.cam_net.parameters())


def test_cam_lr_must_not_be_negative(tmp_path):
    text = re.sub(r"cam_lr: \S+", "cam_lr: -1.0", (Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    assert "cam_lr: -1.0" in text
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(ParamsError, match="bao.cam_lr"):
        load_params(tmp_path / "params.yaml")


def test_target_agreement_counts_the_latest_epoch_only():
    agreement = TargetAgreement()
    targets = torch.tensor([[[0, 1], [2, 0]]])  # (1, 2, 2)
    am = torch.zeros(1, 3, 2, 2)
    am[0, 0] = 1.0  # the student says background everywhere: 2 of 4 cells agree
    agreement.before_epoch(LoopState())
    agreement.add(am, targets)
    agreement.after_epoch(LoopState(), {})
    assert agreement.last_epoch == 0.5
    agreement.before_epoch(LoopState(epoch=1))
    am[0, 1, 0, 1] = am[0, 2, 1, 0] = 5.0
    agreement.add(am, targets)
    agreement.after_epoch(LoopState(epoch=1), {})
    assert agreement.last_epoch == 1.0


def test_shift_grid_and_translation():
    assert shift_grid(0, 2) == [(0, 0)]
    grid = shift_grid(2, 2)
    assert grid[0] == (0, 0) and len(grid) == 9 and (-2, 2) in grid
    label = np.arange(12).reshape(3, 4)
    unmoved, moved = translations(label, [(0, 0), (1, -1)])  # down 1 and left 1, the uncovered strips filled from the edge
    assert (unmoved == label).all()
    assert moved.shape == label.shape
    assert (moved[1:, :3] == label[:2, 1:]).all()
    assert (moved[0, :3] == label[0, 1:]).all() and (moved[1:, 3] == label[:2, 3]).all()


def test_every_shift_is_scored_on_the_same_pixels():
    """A label wrong only along the bottom rows: moving it up would drop those rows from an overlap
    and look better; on a fixed window no shift gains anything."""
    gt = np.zeros((20, 20), np.uint8)
    gt[6:14, 6:14] = 1
    label = gt.copy()
    label[18:, :] = 1
    shifts = shift_grid(2, 2)
    counts = shifted_counts(gt, label, shifts, 2)
    assert all(count.sum() == 16 * 16 for count in counts)
    ious = [(np.diag(c) / (c.sum(0) + c.sum(1) - np.diag(c))).mean() for c in counts]
    assert int(np.argmax(ious)) == 0 and ious[0] == 1.0
    small = shifted_counts(gt[:4, :4], label[:4, :4], shifts, 2)  # too small for a border: the whole image
    assert small[0].sum() == 16


def test_the_alignment_check_finds_a_known_translation():
    gt = np.zeros((20, 20), np.uint8)
    gt[5:12, 6:14] = 1
    label = np.roll(gt, (-2, 4), axis=(0, 1))  # drawn 2 px up and 4 px right of the object
    shifts = shift_grid(4, 2)
    counts = shifted_counts(gt, label, shifts, 2)
    ious = [np.diag(c) / (c.sum(0) + c.sum(1) - np.diag(c)) for c in counts]
    best = shifts[int(np.argmax([iou.mean() for iou in ious]))]
    assert best == (2, -4)  # moving it 2 down and 4 left puts it back
    assert np.allclose(ious[shifts.index(best)], 1.0)


def _one_image_diagnosis(with_cam_net: bool):
    """A 4x4 image, two classes; class 1 present (left half), class 2 absent."""
    gt = np.zeros((4, 4), np.uint8)
    gt[:, :2] = 1
    cams = torch.zeros(2, 4, 4)
    cams[0, :, :2] = 2.0
    cams[0, :, 2] = 0.8  # 0.4 of the max: foreground at t < 0.4 only
    cams[1] = 9.0  # absent: never counted
    background = torch.zeros(1, 4, 4)
    background[0, :, 2:] = 3.0
    am_classes = torch.zeros(2, 4, 4)
    am_classes[0, :, :3] = 1.0
    am_classes[1] = 50.0  # absent class: left out of the student's argmax
    maps = {"cams": cams, "background": background, "am_classes": am_classes}
    labels = torch.tensor([1.0, 0.0])
    return gt, maps, labels


def test_diagnosis_figures_on_a_hand_computed_image():
    gt, maps, labels = _one_image_diagnosis(with_cam_net=True)
    diagnosis = Diagnosis(3, [0.0, 0.3, 0.5], max_shift=2, shift_step=1, with_cam_net=True)
    from bao.infer.pseudo import bao_scores, scores_to_labels

    scores = bao_scores(maps["background"][0], maps["cams"], labels)
    bao_label = scores_to_labels(scores)
    assert (bao_label == gt).all()  # column 2: background 1.0 beats class 0.4
    cam_net_cams = torch.zeros(2, 4, 4)
    cam_net_cams[0, :, 3] = 1.0  # a CAM network that sees the object on the wrong side
    parts = diagnosis.labellings_of(maps, labels, bao_scores_map=scores, cam_net_cams=cam_net_cams, views=1)
    diagnosis.add(diagnosis.score(gt, bao_label, parts))
    summary = diagnosis.summary(["background", "a", "b"])
    # own CAMs swept: t = 0 and 0.3 label columns 0-2 as the class (background IoU 4/8, class IoU 8/12);
    # t = 0.5 labels columns 0-1, the truth
    assert summary["own_cams_best_t"] == 0.5 and summary["own_cams_best_miou"] == 1.0
    assert summary["own_cams_mid_miou"] == 1.0
    assert math.isclose(diagnosis.own_sweep[0].compute()["miou"], (0.5 + 8 / 12) / 2)
    # the student's argmax: class 1 where its channel (1.0) beats background (0 in cols 0-1, 3 in cols 2-3)
    assert summary["student_argmax_miou"] == 1.0
    assert summary["student_background_cam_classes_miou"] == 1.0
    assert summary["minmax_background_miou"] == 1.0
    assert summary["softmax_background_miou"] == 1.0  # p(bg) 1/(1+e) < 1 in columns 0-1, about 0.88 > 0.4 in column 2
    # BAO's background with CAMs on the wrong side: columns 0-1 (background 0, class 0 -> the tie rule gives the
    # class with the largest maximum) and column 3 (both 1.0 after normalisation) go wrong
    assert summary["bg_with_cam_net_cams_miou"] < 0.5
    assert summary["best_shift_dy"] == 0 and summary["best_shift_dx"] == 0 and summary["best_shift_gain"] == 0.0
    assert summary["fg_share_truth"] == 0.5 and summary["fg_share_bao"] == 0.5 and summary["fg_share_mid_t"] == 0.5
    # the teacher's background: 1 - max normalised CAM = 0 (cols 0-1), 0.6 (col 2), 1 (col 3) -> mean 0.4
    assert math.isclose(summary["teacher_bg_mean"], (0 + 0 + 0.6 + 1.0) / 4, abs_tol=1e-4)
    assert math.isclose(summary["bg_score_mean"], 0.5, abs_tol=1e-4)  # normalised background: 0, 0, 1, 1


def test_diagnosis_without_a_scored_image_is_none():
    assert Diagnosis(3, [0.5], max_shift=0, shift_step=1, with_cam_net=False).summary(["a", "b", "c"]) is None


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return tiny_synthetic_manifest(tmp_path_factory.mktemp("tiny"))


@pytest.mark.parametrize("cam_lr", [0.0, 1e-4])
def test_tiny_run_with_the_cam_lr_and_the_diagnosis(manifest, tmp_path, cam_lr):
    device = torch.device("cpu")
    torch.manual_seed(0)
    cam_net, _ = train_cam_net(manifest, TINY_MODEL, PARAMS.train_cam.model_copy(update=TINY_LOADER), device=device, seed=0, live=RecordingLive())
    save_model(tmp_path / "cam.pt", cam_net, {})
    cfg = PARAMS.bao.model_copy(update={**TINY_LOADER, "cam_lr": cam_lr})
    student, metrics = train_bao_net(manifest, TINY_MODEL, cfg, str(tmp_path / "cam.pt"), device=device, seed=0, live=RecordingLive())
    assert 0.0 <= metrics["final_teacher_agreement"] <= 1.0
    assert same_weights(student.cam_net, cam_net) == (cam_lr == 0.0)  # frozen: weights and BN statistics unchanged
    pseudo_cfg = PARAMS.pseudo_label.model_copy(update={"scales": (64,), "shift_max": 2, "shift_step": 2})
    results = bao_pseudo_labels(student, manifest, pseudo_cfg, crf=PARAMS.crf, device=device, out_dir=tmp_path, cam_net=cam_net)
    diagnosis = results["diagnosis"]
    assert set(diagnosis) >= {"own_cams_best_miou", "student_argmax_miou", "bg_with_cam_net_cams_miou", "best_shift_gain", "fg_share_bao"}
    assert all(value is not None and math.isfinite(value) for value in diagnosis.values())
    if cam_lr == 0.0:  # the same CAMs: the labels with the CAM network's CAMs are BAO's own
        assert math.isclose(diagnosis["bg_with_cam_net_cams_miou"], results["bao"]["miou"])
    off = PARAMS.pseudo_label.model_copy(update={"scales": (64,), "diagnose": False})
    assert bao_pseudo_labels(student, manifest, off, crf=PARAMS.crf, device=device, out_dir=tmp_path, cam_net=cam_net)["diagnosis"] is None


def test_softmax_background_averages_the_views_and_never_picks_an_absent_class():
    from bao.infer.pseudo import softmax_background_scores

    background = torch.tensor([[[2.0, -1.0]]])  # (1, 1, 2)
    am_classes = torch.tensor([[[0.0, 1.0]], [[9.0, 9.0]]])  # class 2 absent
    cams = torch.tensor([[[1.0, 3.0]], [[5.0, 5.0]]])
    labels = torch.tensor([1.0, 0.0])
    one = softmax_background_scores(background[0], am_classes, cams, labels, views=1)
    # two identical views summed give the same scores as one: the logits are averaged
    assert torch.allclose(softmax_background_scores(2 * background[0], 2 * am_classes, 2 * cams, labels, views=2), one)
    expected_bg = torch.sigmoid(torch.tensor([2.0, -2.0]))  # softmax over background and class 1 only
    assert torch.allclose(one[0, 0], expected_bg)
    assert torch.allclose(one[1, 0], torch.tensor([1.0 / (3.0 + 1e-5), 3.0 / (3.0 + 1e-5)]))
    assert (one[2] == -1.0).all()
    assert one.argmax(dim=0).tolist() == [[0, 1]]  # 0.88 beats 0.33; 0.12 loses to 1.0
