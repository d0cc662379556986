"""Every registered model family states where its feature cells sit; measured here, not trusted.

The measurement: set every conv's spatial kernel to a box (channel mixing stays random, so no
normalisation layer sees constant channels), make every max-pool module an average pool of the same
window (a max routes the gradient to one arbitrary pixel per window), feed a positive image (small
where ReLU6 must stay linear) and take the centroid of the squared gradient of one interior cell's
features with respect to the input. With symmetric box kernels that centroid is the centre of the
cell's receptive field, whatever the padding does; random kernels would add their own asymmetry.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from bao.config import ModelConfig
from bao.infer.align import resize_to_image
from bao.models import CAM_FAMILIES, BaoNet, backbone_family, create_cam_net, create_deeplab
from bao.models.geometry import FeatureGeometry, trace_geometry

# family -> (backbone, input side, measured cell near the centre, input level). TF-SAME padding
# (timm's tf_* models) is the one that moves: +15 px at stride 16 on even sides. The small
# tf_mobilenetv3 stands in for tf_efficientnet_lite0 (same padding, measured +15.0 as well at 384 px
# by the README's command, but 10x slower here)
CASES = {
    "cnn": [("resnet18", 256, 8, 1.0), ("tf_mobilenetv3_small_minimal_100", 256, 8, 1e-3)],
    "vit": [("deit_tiny_patch16_224", 128, 4, 1.0)],
    "conformer": [("conformer_tiny_patch16", 128, 4, 1.0)],
}


def _box_kernels(net: nn.Module) -> None:
    generator = torch.Generator().manual_seed(0)
    for name, module in list(net.named_modules()):
        if isinstance(module, nn.MaxPool2d):
            parent = net.get_submodule(name.rpartition(".")[0]) if "." in name else net
            pool = nn.AvgPool2d(module.kernel_size, module.stride, module.padding, module.ceil_mode, count_include_pad=False)
            setattr(parent, name.rpartition(".")[2], pool)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d):
                out_channels, in_channels, height, width = module.weight.shape
                mix = torch.rand(out_channels, in_channels, 1, 1, generator=generator) + 0.5
                module.weight.copy_((mix / (in_channels * height * width)).expand_as(module.weight))
                if module.bias is not None:
                    module.bias.zero_()


def measured_centre(features_of, side: int, cell: int, level: float = 1.0) -> tuple[float, float]:
    """(y, x) input pixel the features of cell (cell, cell) are centred on."""
    generator = torch.Generator().manual_seed(1)
    images = ((torch.rand(1, 3, side, side, generator=generator) + 0.5) * level).requires_grad_(True)
    features_of(images)[0, :, cell, cell].sum().backward()
    energy = images.grad[0].pow(2).sum(0).double()
    coords = torch.arange(side, dtype=torch.float64)
    return tuple(float((energy.sum(axis) * coords).sum() / energy.sum()) for axis in (1, 0))


def test_every_family_is_measured():
    assert set(CASES) == set(CAM_FAMILIES)
    for family, cases in CASES.items():
        assert all(backbone_family(name) == family for name, *_ in cases)


def stated_and_measured(name: str, side: int, cell: int, level: float) -> tuple[nn.Module, FeatureGeometry, tuple[float, float]]:
    """(the CAM network, its stated geometry, the measured centre of cell (cell, cell)); seeded,
    because a ViT's LayerNorm can see nearly constant channels under some random mixes."""
    torch.manual_seed(0)
    net = create_cam_net(ModelConfig(backbone=name, pretrained=False, output_stride=16), 3).eval()
    _box_kernels(net)
    return net, net.feature_geometry((side, side)), measured_centre(lambda images: net(images)["features"], side, cell, level)


@pytest.mark.parametrize("name, side, cell, level", [case for cases in CASES.values() for case in cases])
def test_stated_geometry_matches_the_measured_receptive_field_centre(name, side, cell, level):
    net, geometry, centre = stated_and_measured(name, side, cell, level)
    for axis in range(2):
        stated = geometry.offset[axis] + geometry.stride[axis] * cell
        assert abs(centre[axis] - stated) <= 1.0, (name, axis, centre, geometry)
    assert geometry.stride == (16.0, 16.0)
    # the BAO network's activation map is a 3x3 conv of the same features
    assert BaoNet(net).feature_geometry((side, side)) == geometry


def test_deeplab_logits_geometry_is_its_backbones():
    net = create_deeplab("resnet18", 3, pretrained=False, output_stride=16).eval()
    _box_kernels(net)
    geometry = net.feature_geometry((256, 256))
    centre = measured_centre(net.backbone, 256, 8)
    assert geometry == FeatureGeometry((16.0, 16.0), (0.0, 0.0))
    assert max(abs(c - 128.0) for c in centre) <= 1.0


def test_tf_same_padding_depends_on_the_input_size():
    """Hand-computed: SAME padding on an even side pads only after, so a k3/s2 layer centres output
    o on 2*o + 1; on an odd side it pads one before and one after: 2*o."""
    from timm.layers import Conv2dSame

    same = nn.Sequential(Conv2dSame(3, 4, 3, stride=2), Conv2dSame(4, 4, 3, stride=2))
    # rows 8 -> 4 (pad 0 before, 1 after: +1) -> 2 (again +1, at stride 2): 1 + 2 = 3;
    # columns 9 -> 5 (pad 1 + 1: 0) -> 3 (pad 1 + 1: 0)
    assert trace_geometry(same, (8, 9)) == FeatureGeometry((4.0, 4.0), (3.0, 0.0))
    valid = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=0))
    assert trace_geometry(valid, (8, 8)) == FeatureGeometry((2.0, 2.0), (1.0, 1.0))


def test_resize_to_image_hand_computed():
    """Stride 16, offset 0, image == input 40 px, 3 cells at 0, 16, 32: pixel 8 is half-way
    between cells 0 and 1, pixel 36 beyond the last cell is clamped to it."""
    maps = torch.tensor([0.0, 16.0, 48.0]).view(1, 1, 1, 3).expand(1, 1, 2, 3)
    geometry = FeatureGeometry((16.0, 16.0), (0.0, 0.0))
    out = resize_to_image(maps, image_size=(2, 40), input_size=(2, 40), geometry=geometry, align="geometric")[0, 0, 0]
    assert out[0] == 0 and out[8] == 8 and out[16] == 16 and out[24] == 32 and out[32] == 48 and out[36] == 48
    # the image was 20 px wide, the network saw it at 40: image pixel x is input pixel 2x + 0.5
    half = resize_to_image(maps, image_size=(2, 20), input_size=(2, 40), geometry=geometry, align="geometric")[0, 0, 0]
    # x = 4 -> input 8.5 -> cell 0.53 -> 8.5; x = 12 -> input 24.5 -> cell 1.53 -> 16 + 0.53 * 32 = 33
    assert half[4] == pytest.approx(8.5) and half[12] == pytest.approx(33.0)


def test_geometric_equals_the_official_resize_where_their_conventions_agree():
    """``align_corners=False`` bilinear is the geometric resize of a grid with offset
    (stride - 1) / 2 (a ViT's patches) and of a stride-1 map: the two modes differ only in geometry."""
    maps = torch.randn(2, 3, 5, 7)
    official = resize_to_image(maps, image_size=(80, 112), input_size=(80, 112), geometry=None, align="official")
    patches = FeatureGeometry((16.0, 16.0), (7.5, 7.5))
    geometric = resize_to_image(maps, image_size=(80, 112), input_size=(80, 112), geometry=patches, align="geometric")
    torch.testing.assert_close(geometric, official, rtol=1e-5, atol=1e-5)
    pixel_grid = FeatureGeometry((1.0, 1.0), (0.0, 0.0))
    up = resize_to_image(maps, image_size=(13, 9), input_size=(5, 7), geometry=pixel_grid, align="geometric")
    torch.testing.assert_close(up, F.interpolate(maps, size=(13, 9), mode="bilinear", align_corners=False), rtol=1e-5, atol=1e-5)


if __name__ == "__main__":  # the README's table: stated vs measured offsets (tf_efficientnet_lite0 too)
    for name, side, cell, level in [("tf_efficientnet_lite0", 384, 12, 1e-3), *(c for cs in CASES.values() for c in cs)]:
        _, stated, (y, x) = stated_and_measured(name, side, cell, level)
        print(f"{name}: stated offset {stated.offset[0]:+.1f}, measured {y - 16 * cell:+.2f} / {x - 16 * cell:+.2f}")
