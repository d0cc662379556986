"""A batch of images gives the maps and pseudo-labels of the same images one at a time."""

import torch
from torch.utils.data import DataLoader

from bao.config import ModelConfig
from bao.infer.multiscale import batched_multiscale_maps
from bao.infer.predict import collate_full_size, iterate_multiscale, map_forward
from bao.models import create_bao_net
from bao.models.geometry import FeatureGeometry
from inference_reference import bao_pseudo_label, one_image_maps

PIXEL_GRID = lambda size: FeatureGeometry((1.0, 1.0), (0.0, 0.0))  # noqa: E731  (maps at input resolution)
SIZES = [(20, 30), (24, 24), (20, 30), (17, 41), (24, 24)]


def _images(seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(3, h, w, generator=generator) for h, w in SIZES]


def _labels(count: int, num_classes: int = 3) -> torch.Tensor:
    labels = torch.zeros(count, num_classes)
    for row in range(count):
        labels[row, row % num_classes] = 1.0
        labels[row, (row + 2) % num_classes] = 1.0
    return labels


def test_batched_equals_per_image_exactly_for_a_per_sample_forward():
    """A forward pass that treats every row alone (and sees its labels) gives bit-identical sums."""
    images, labels = _images(), _labels(len(SIZES))

    def forward(batch, batch_labels):
        # an asymmetric map (left-right gradient) so a missing un-flip would show
        ramp = torch.linspace(0, 1, batch.shape[-1])
        return {"a": batch[:, :2] * ramp + batch_labels[:, :2, None, None], "b": batch[:, 2:].pow(2)}

    batched = batched_multiscale_maps(forward, images, labels, scales=[8, 13, 16], flip=True, geometry=PIXEL_GRID)
    for image, row, maps in zip(images, labels, batched):
        reference = one_image_maps(lambda b, row=row: forward(b, row[None].expand(b.shape[0], -1)), image, [8, 13, 16], True, geometry=PIXEL_GRID)
        assert set(maps) == {"a", "b"}
        for name in maps:
            assert maps[name].shape == reference[name].shape
            assert torch.equal(maps[name], reference[name])


class _Items(torch.utils.data.Dataset):
    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return {"image": self.images[index], "labels": self.labels[index], "index": index}


def test_pseudo_labels_of_the_batched_loader_equal_the_per_image_path():
    torch.manual_seed(0)
    net = create_bao_net(ModelConfig(backbone="test_resnet", pretrained=False, output_stride=16), 3).eval()
    images, labels = _images(1), _labels(len(SIZES))
    device = torch.device("cpu")
    scales = [32, 48]
    loader = DataLoader(_Items(images, labels), batch_size=3, collate_fn=collate_full_size)
    batched = {index: (maps, row) for index, maps, row in iterate_multiscale(net, loader, device, scales, flip=True, with_am=True, desc="test")}
    assert sorted(batched) == list(range(len(SIZES)))
    forward = map_forward(net, device, with_am=True)
    with torch.no_grad():
        for index, (image, row) in enumerate(zip(images, labels)):
            reference = one_image_maps(lambda b, row=row: forward(b, row[None].expand(b.shape[0], -1)), image, scales, True, geometry=net.feature_geometry)
            maps, batched_row = batched[index]
            assert torch.equal(batched_row, row)
            for name in ("cams", "background"):
                assert maps[name].shape == (reference[name].shape[0], *SIZES[index])
                torch.testing.assert_close(maps[name], reference[name], rtol=1e-5, atol=1e-5)
            expected = bao_pseudo_label(reference["background"][0], reference["cams"], row)
            assert (bao_pseudo_label(maps["background"][0], maps["cams"], row) == expected).all()
