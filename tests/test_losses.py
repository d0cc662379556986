"""Hand-computed expectations for BAO's targets and losses."""

import math

import pytest
import torch

from bao.losses import background_activated_cams, balanced_soft_ce, smooth_targets, soft_ce, teacher_targets


def test_teacher_targets_hand_computed():
    # Two classes on a 1x3 map; class 1 is absent from the image and must be ignored.
    cams = torch.tensor([[[[4.0, 1.0, -2.0]], [[9.0, 9.0, 9.0]]]])
    labels = torch.tensor([[1.0, 0.0]])
    maps = background_activated_cams(cams, labels)
    # class 0: relu -> [4, 1, 0], / max 4 -> [1, 0.25, 0]; background = 1 - that.
    expected_fg = torch.tensor([1.0, 0.25, 0.0]) * 4 / (4 + 1e-5)
    assert torch.allclose(maps[0, 1, 0], expected_fg, atol=1e-6)
    assert torch.allclose(maps[0, 0, 0], 1 - expected_fg, atol=1e-6)
    assert torch.equal(maps[0, 2, 0], torch.zeros(3))
    # argmax: pixel 0 -> class 1 (index of class 0 + 1), pixels 1 and 2 -> background.
    assert teacher_targets(cams, labels).tolist() == [[[1, 0, 0]]]


def test_teacher_targets_pick_strongest_present_class():
    cams = torch.tensor([[[[2.0, 1.0]], [[1.0, 4.0]]]])
    labels = torch.tensor([[1.0, 1.0]])
    # normalized: class0 [1, .5], class1 [.25, 1]; bg = [0, 0] -> pixel0 class0, pixel1 class1.
    assert teacher_targets(cams, labels).tolist() == [[[1, 2]]]


def test_label_smoothing_values():
    targets = torch.tensor([[[0, 2]]])
    soft = smooth_targets(targets, num_channels=3, eps=0.4)
    assert soft.shape == (1, 3, 1, 2)
    assert torch.allclose(soft[0, :, 0, 0], torch.tensor([0.6, 0.2, 0.2]))
    assert torch.allclose(soft[0, :, 0, 1], torch.tensor([0.2, 0.2, 0.6]))
    assert torch.allclose(soft.sum(1), torch.ones(1, 1, 2))
    assert torch.equal(smooth_targets(targets, 3, 0.0)[0, :, 0, 1], torch.tensor([0.0, 0.0, 1.0]))


def _pixel_ce(logits, soft):
    return -(soft * torch.log_softmax(logits, 1)).sum(1)


def test_balanced_ce_is_mean_of_halves():
    logits = torch.tensor([[[[2.0, 0.0, 1.0]], [[0.0, 3.0, -1.0]]]])  # (1, 2, 1, 3)
    hard = torch.tensor([[[0, 1, 1]]])
    soft = smooth_targets(hard, 2, 0.0)
    ce = _pixel_ce(logits, soft)[0, 0]
    expected = 0.5 * (ce[0] + ce[1:].mean())
    assert torch.allclose(balanced_soft_ce(logits, soft, hard), expected)
    # the first-epoch foreground weight scales only the foreground half
    expected_weighted = 0.5 * (ce[0] + 0.5 * ce[1:].mean())
    assert torch.allclose(balanced_soft_ce(logits, soft, hard, fg_weight=0.5), expected_weighted)
    # unbalanced CE differs: it averages all pixels together
    assert not torch.allclose(soft_ce(logits, soft), expected)


def test_balanced_ce_with_no_foreground_pixels():
    logits = torch.tensor([[[[2.0, 0.5]], [[0.0, 1.0]]]])
    hard = torch.zeros(1, 1, 2, dtype=torch.long)
    soft = smooth_targets(hard, 2, 0.4)
    loss = balanced_soft_ce(logits, soft, hard)
    assert math.isfinite(loss.item())
    assert torch.allclose(loss, 0.5 * _pixel_ce(logits, soft).mean())


def test_balanced_ce_with_no_background_pixels():
    logits = torch.tensor([[[[2.0, 0.5]], [[0.0, 1.0]]]], requires_grad=True)
    hard = torch.ones(1, 1, 2, dtype=torch.long)
    soft = smooth_targets(hard, 2, 0.4)
    loss = balanced_soft_ce(logits, soft, hard, fg_weight=0.5)
    assert torch.allclose(loss, 0.5 * 0.5 * _pixel_ce(logits, soft).mean())
    loss.backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("eps", [0.0, 0.4])
def test_smoothing_sums_to_one_for_many_classes(eps):
    targets = torch.randint(0, 21, (2, 4, 4))
    assert torch.allclose(smooth_targets(targets, 21, eps).sum(1), torch.ones(2, 4, 4))


def test_teacher_target_of_a_class_negative_everywhere_is_background():
    """Signed CAMs: ReLU before dividing by the max. Without it the present class [-4, -2] would
    be divided by its negative max, [2, 1], and win every pixel; with it the class map is 0, the
    background 1 - 0 = 1 everywhere."""
    cams = torch.tensor([[[[-4.0, -2.0]]]])
    labels = torch.tensor([[1.0]])
    maps = background_activated_cams(cams, labels)
    assert torch.equal(maps[0, :, 0], torch.tensor([[1.0, 1.0], [0.0, 0.0]]))
    assert teacher_targets(cams, labels).tolist() == [[[0, 0]]]
