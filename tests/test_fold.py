"""BatchNorm folded into convolutions for inference (bao.models.fold): same outputs, fewer passes, never a wrong fold."""

import torch
from torch import nn

from bao.config import ModelConfig
from bao.models import create_cam_net
from bao.models.fold import folded_for_inference


def _trained_bn(module: nn.Module, seed: int = 0) -> nn.Module:
    """Running statistics and affine parameters away from their identity start."""
    generator = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=generator))
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=generator))
            m.bias.data.copy_(torch.randn(m.num_features, generator=generator))
    return module.eval()


def _batchnorms(module: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in module.modules())


class SwappedOrder(nn.Module):
    """``bn`` is registered after ``first`` but normalises ``second``'s output."""

    def __init__(self):
        super().__init__()
        self.first = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.second = nn.Conv2d(4, 4, 3, padding=1, bias=False)

    def forward(self, x):
        return torch.relu(self.bn(self.second(self.first(x))))


class SharedOutput(nn.Module):
    """The convolution's output is read by its BatchNorm and by a residual sum: folding would change the sum."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


def test_cam_network_folds_to_the_same_maps_without_touching_the_original():
    torch.manual_seed(0)
    net = _trained_bn(create_cam_net(ModelConfig(backbone="tf_efficientnet_lite0", pretrained=False, output_stride=16), 3))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    images = torch.randn(2, 3, 64, 64)
    folded = folded_for_inference(net, lambda m: m(images), channels_last=True)
    assert folded is not net
    assert _batchnorms(net) > 0 and _batchnorms(folded) == 0  # every conv -> BN pair of Lite0 folded
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert next(m for m in folded.modules() if isinstance(m, nn.Conv2d)).weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected, got = net(images), folded(images.contiguous(memory_format=torch.channels_last))
    for key in ("cams", "logits"):
        assert torch.allclose(expected[key], got[key], atol=1e-4, rtol=1e-4), key


def test_the_pairing_follows_the_data_not_the_registration_order():
    model = _trained_bn(SwappedOrder())
    x = torch.randn(2, 3, 8, 8)
    folded = folded_for_inference(model, lambda m: m(x))
    assert isinstance(folded.bn, nn.Identity)
    assert folded.second.bias is not None and model.second.bias is None  # the BN went into the conv that feeds it
    assert torch.allclose(folded(x), model(x), atol=1e-5)


def test_a_fold_that_would_change_the_outputs_is_refused():
    model = _trained_bn(SharedOutput())
    x = torch.randn(2, 3, 8, 8)
    assert folded_for_inference(model, lambda m: m(x)) is model


def test_nothing_to_fold_returns_the_model():
    model = nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU()).eval()
    assert folded_for_inference(model, lambda m: m(torch.randn(1, 3, 4, 4))) is model
