"""Inference copies of a network with each BatchNorm folded into the convolution that feeds it.

In eval mode a BatchNorm is a per-channel affine map, so it merges into the weights and bias of
the convolution before it: the same function with one pass over each feature map fewer. On CPU it
is what lets NHWC (``channels_last``) convolutions pay off, because eval-mode BatchNorm on NHWC
tensors is slow there (``python -m benchmarks.inference``). Which convolution feeds which
BatchNorm is observed on a real forward pass, not guessed from module order, and the copy is used
only if it gives the original's outputs on that pass.
"""

from __future__ import annotations

import copy
import logging
import weakref
from collections.abc import Callable
from typing import Any

import torch
from timm.layers import BatchNormAct2d
from torch import nn

log = logging.getLogger("bao")

FOLD_TOLERANCE = 1e-3  # largest difference allowed, relative to the largest output magnitude (float32 rounding is ~1e-6)


def _conv_bn_pairs(model: nn.Module, run: Callable[[nn.Module], Any]) -> tuple[list[tuple[str, str]], Any]:
    """(conv name, BatchNorm name) for each BatchNorm whose input is the very tensor a convolution
    returned during ``run(model)``, with what ``run`` returned."""
    names = {module: name for name, module in model.named_modules()}
    produced: dict[int, tuple[weakref.ref, nn.Module]] = {}
    pairs: dict[str, str] = {}

    def after_conv(module, _inputs, output):
        produced[id(output)] = (weakref.ref(output), module)

    def before_bn(module, inputs):
        entry = produced.get(id(inputs[0]))
        if entry is not None and entry[0]() is inputs[0]:
            pairs.setdefault(names[module], names[entry[1]])

    handles = [m.register_forward_hook(after_conv) for m in model.modules() if isinstance(m, nn.Conv2d)]
    handles += [m.register_forward_pre_hook(before_bn) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    try:
        output = run(model)
    finally:
        for handle in handles:
            handle.remove()
    convs = [conv for conv in pairs.values()]
    return [(conv, bn) for bn, conv in pairs.items() if convs.count(conv) == 1], output


def _after_normalisation(bn: nn.BatchNorm2d) -> nn.Module | None:
    """What is left of ``bn`` once its normalisation is in the convolution; None: not foldable here."""
    if bn.training or bn.running_mean is None or bn.running_var is None:
        return None
    if type(bn) is nn.BatchNorm2d:
        return nn.Identity()
    if type(bn) is BatchNormAct2d:  # timm: batch norm, then dropout and activation
        return nn.Sequential(bn.drop, bn.act)
    return None


@torch.no_grad()
def _fold_into(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale + (bn.bias if bn.bias is not None else 0)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
    conv.weight.mul_(scale.view(-1, *([1] * (conv.weight.dim() - 1))).to(conv.weight.dtype))
    conv.bias = nn.Parameter((bias * scale + shift).to(conv.weight.dtype), requires_grad=False)


def _outputs_close(reference: Any, candidate: Any) -> bool:
    if isinstance(reference, dict):
        return isinstance(candidate, dict) and reference.keys() == candidate.keys() and all(
            _outputs_close(reference[key], candidate[key]) for key in reference)
    if isinstance(reference, (list, tuple)):
        return len(reference) == len(candidate) and all(_outputs_close(a, b) for a, b in zip(reference, candidate))
    if not torch.is_tensor(reference):
        return True
    if reference.shape != candidate.shape:
        return False
    if reference.numel() == 0:
        return True
    reference, candidate = reference.float(), candidate.float()
    allowed = FOLD_TOLERANCE * max(reference.abs().max().item(), 1e-6)
    return bool(torch.isfinite(candidate).all()) and (reference - candidate).abs().max().item() <= allowed


@torch.no_grad()
def folded_for_inference(model: nn.Module, run: Callable[[nn.Module], Any], *, channels_last: bool = False) -> nn.Module:
    """An eval-mode copy of ``model`` with BatchNorm folded wherever ``run(model)`` (a forward pass
    on real inputs, run in float32) shows a convolution feeding it alone, NHWC if ``channels_last``.
    ``model`` itself (in eval mode) when nothing folds or the copy's outputs differ from the
    original's by more than ``FOLD_TOLERANCE``: folding is an optimisation, never a change of result."""
    model.eval()
    pairs, reference = _conv_bn_pairs(model, run)
    folded = copy.deepcopy(model).eval()
    modules = dict(folded.named_modules())
    done = 0
    for conv_name, bn_name in pairs:
        remainder = _after_normalisation(modules[bn_name])
        if remainder is None:
            continue
        _fold_into(modules[conv_name], modules[bn_name])
        parent_name, _, child = bn_name.rpartition(".")
        setattr(modules[parent_name] if parent_name else folded, child, remainder)
        done += 1
    if done == 0:
        return model
    if channels_last:
        folded = folded.to(memory_format=torch.channels_last)
    if not _outputs_close(reference, run(folded)):
        log.warning("inference: the network with its BatchNorm folded into %d convolutions does not give the original's outputs; "
                    "running it unfolded", done)
        return model
    return folded
