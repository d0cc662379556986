import numpy as np
import pytest
import torch

from bao.infer.pseudo import bao_scores, floor_minmax_normalize, max_normalized_cams, threshold_pseudo_labels
from bao.models.geometry import FeatureGeometry
from inference_reference import bao_pseudo_label, one_image_maps

# maps at the input resolution: cell o is input pixel o
PIXEL_GRID = lambda size: FeatureGeometry((1.0, 1.0), (0.0, 0.0))  # noqa: E731


def test_multiscale_flip_merge_recovers_a_flip_equivariant_map():
    image = torch.arange(2 * 4, dtype=torch.float32).reshape(1, 2, 4).expand(3, 2, 4).contiguous()

    def identity(batch):
        return {"maps": batch[:, :1]}

    # each scale: the map and its un-flipped mirror both equal the resized image, summed -> 2 each
    merged = one_image_maps(identity, image, [2, 4], False, geometry=PIXEL_GRID)["maps"]
    assert merged.shape == (1, 2, 4)
    same_size = one_image_maps(identity, image, [4], True, geometry=PIXEL_GRID)["maps"]
    # square resize 2x4 -> 4x4 -> back to 2x4 is not exact, but a left-right symmetric pipeline
    # seen twice (image + un-flipped mirror) doubles the map
    assert torch.allclose(same_size, 2 * one_image_maps(identity, image, [4], False, geometry=PIXEL_GRID)["maps"])
    # a forward pass that only sees the mirror must be un-flipped before summing
    def left_marker(batch):
        out = torch.zeros(batch.shape[0], 1, *batch.shape[-2:])
        out[..., 0] = 1.0  # marks the left column of whatever it sees
        return {"maps": out}

    merged = one_image_maps(left_marker, image, [4], True, geometry=PIXEL_GRID)["maps"][0]
    # original marks column 0, the mirror marks its column 0 = original column 3
    assert merged[:, 0].tolist() == [1.0, 1.0]
    assert merged[:, 3].tolist() == [1.0, 1.0]
    assert merged[:, 1:3].abs().sum() == 0


def test_multiscale_sums_over_scales():
    image = torch.ones(3, 6, 6)
    merged = one_image_maps(lambda b: {"m": torch.ones(b.shape[0], 2, 3, 3)}, image, [4, 8, 12], True, geometry=PIXEL_GRID)
    assert torch.allclose(merged["m"], torch.full((2, 6, 6), 6.0))


def test_bao_pseudo_label_argmax_without_threshold():
    background = torch.tensor([[5.0, 1.0, 0.0]])
    cams = torch.tensor([[[0.0, 2.0, 4.0]], [[9.0, 9.0, 9.5]]])  # class 2 absent
    labels = torch.tensor([1.0, 0.0])
    label = bao_pseudo_label(background, cams, labels)
    # bg min-max: [1, .2, 0]; class1: [0, .5, 1]; class 2 absent never wins
    assert label.tolist() == [[0, 1, 1]]
    assert label.dtype == np.uint8


def test_bao_pseudo_label_applies_relu_before_min_max():
    """Negative evidence must not survive normalisation: ReLU first, then min-max. Background
    [-4, 0, 4] -> ReLU [0, 0, 4] -> [0, 0, 1]; the present class [1, 0.4, 0] -> [1, 0.4, 0];
    argmax [1, 1, 0]. Min-max without the ReLU gives background [0, 0.5, 1], which beats 0.4 at
    the middle pixel: [1, 0, 0]. No pixel is a tie (each has a positive class score or a winning
    background), so the rule for ties does not enter."""
    background = torch.tensor([[-4.0, 0.0, 4.0]])
    cams = torch.tensor([[[1.0, 0.4, 0.0]], [[7.0, 7.0, 7.0]]])  # class 2 absent
    labels = torch.tensor([1.0, 0.0])
    assert bao_pseudo_label(background, cams, labels).tolist() == [[1, 1, 0]]
    scores = bao_scores(background, cams, labels)
    torch.testing.assert_close(scores[0], torch.tensor([[0.0, 0.0, 1.0]]), rtol=0, atol=1e-4)


def test_bao_pseudo_label_on_signed_maps_of_several_classes():
    """Signed maps, two present classes: ReLU zeroes each channel's negative part before its
    min-max. bg [2, -6, 0, 1] -> [1, 0, 0, .5]; class 1 [-2, 3, 1.5, -1] -> [0, 1, .5, 0];
    class 3 [0, -1, 2, 1.4] -> [0, 0, 1, .7]; argmax [0, 1, 3, 3]. Without the ReLU the last pixel
    goes to background (.875 against class 3's .8)."""
    background = torch.tensor([[2.0, -6.0, 0.0, 1.0]])
    cams = torch.tensor([[[-2.0, 3.0, 1.5, -1.0]], [[5.0, 5.0, 5.0, 5.0]], [[0.0, -1.0, 2.0, 1.4]]])
    labels = torch.tensor([1.0, 0.0, 1.0])
    assert bao_pseudo_label(background, cams, labels).tolist() == [[0, 1, 3, 3]]


def test_baseline_class_that_is_negative_everywhere_gives_background():
    """ReLU before dividing by the max: a present class whose CAM is all negative is 0, not
    [-4, -2] / -2 = [2, 1] (above every threshold)."""
    cams = torch.tensor([[[-4.0, -2.0]], [[0.0, 3.0]]])
    normalized = max_normalized_cams(cams, torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(normalized, torch.tensor([[[0.0, 0.0]], [[0.0, 1.0]]]), rtol=0, atol=1e-4)
    assert threshold_pseudo_labels(normalized, [0.0, 0.5])[1].tolist() == [[0, 2]]


def test_floor_minmax_normalize():
    maps = torch.tensor([[[1.0, 3.0]], [[2.0, 2.0]]])
    out = floor_minmax_normalize(maps)
    eps = 1e-5
    # the minimum pixel is floored to 0 first: (0 - 1 - eps) / (2 + eps)
    assert torch.allclose(out[0], torch.tensor([[(-1.0 - eps) / (2.0 + eps), (2.0 - eps) / (2.0 + eps)]]))
    # a constant channel is all at its minimum: (0 - 2 - eps) / eps
    assert torch.allclose(out[1], torch.full((1, 2), (-2.0 - eps) / eps))


def test_threshold_baseline_hand_computed():
    cams = torch.tensor([[[2.0, 1.0, 0.2, -1.0]], [[0.0, 4.0, 1.0, 0.0]]])
    labels = torch.tensor([1.0, 1.0])
    normalized = max_normalized_cams(cams, labels)
    # class1: [1, .5, .1, 0]; class2: [0, 1, .25, 0]
    low, mid, high = threshold_pseudo_labels(normalized, [0.0, 0.2, 0.6])
    assert low.tolist() == [[1, 2, 2, 0]]
    assert mid.tolist() == [[1, 2, 2, 0]]
    assert high.tolist() == [[1, 2, 0, 0]]
    # an absent class is zeroed before thresholding
    only_first = threshold_pseudo_labels(max_normalized_cams(cams, torch.tensor([1.0, 0.0])), [0.3])[0]
    assert only_first.tolist() == [[1, 1, 0, 0]]


def test_input_resize_is_pils_antialiased_bicubic_on_uint8():
    """The official code resizes the uint8 image with PIL's bicubic (antialiased when shrinking)."""
    from PIL import Image

    from bao.infer.align import resize_input

    generator = np.random.default_rng(0)
    image = generator.integers(0, 256, size=(75, 101, 3), dtype=np.uint8)
    image[20:40, 30:60] = 255  # a hard edge, where bicubic overshoots and must be clamped
    for size in (32, 64, 144):
        expected = np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC)).astype(int)
        ours = resize_input(torch.from_numpy(image).permute(2, 0, 1)[None], (size, size))[0].permute(1, 2, 0)
        assert ours.dtype == torch.uint8
        difference = np.abs(ours.numpy().astype(int) - expected)
        assert difference.max() <= 1 and (difference > 0).mean() < 0.002  # float vs PIL's fixed point


def test_tie_pixels_go_to_the_channel_with_the_largest_range():
    """Official rule: where background and every present class are 0 after ReLU, each channel
    scores -eps / (max - min + eps), so the largest range wins."""
    background = torch.tensor([[2.0, 0.0, -1.0]])
    cams = torch.tensor([[[4.0, 0.0, 0.0]], [[3.0, -2.0, 0.0]], [[9.0, 9.0, 9.0]]])
    labels = torch.tensor([1.0, 1.0, 0.0])  # class 3 absent
    # pixels 1 and 2: background (max 2), class 1 (max 4), class 2 (max 3) are all 0: class 1 wins
    assert bao_pseudo_label(background, cams, labels).tolist() == [[1, 1, 1]]
    # the same ties with a larger background range go to the background
    assert bao_pseudo_label(background * 3, cams, labels).tolist() == [[0, 0, 0]]
    scores = bao_scores(background, cams, labels)
    eps = 1e-5
    assert scores[:3, 0, 1].tolist() == pytest.approx([-eps / (2 + eps), -eps / (4 + eps), -eps / (3 + eps)])
    assert (scores[3] == -1).all()
