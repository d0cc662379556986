"""Patch-to-patch attention for CAM refinement (TransCAM): recorded only when asked for.

timm's attention uses fused scaled-dot-product kernels that never materialise the weights. While
a ``record()`` block is open, a forward pre-hook on each attention module recomputes
softmax(q k^T * scale) from the same input and the module's own qkv projection, averages it over
heads and adds it to a running sum over layers. Outside the block no hook is registered, so the
plain forward pass costs exactly what it did before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn


def attention_weights(attn: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """(B, N, N): a timm ``Attention`` module's softmax weights for ``tokens``, averaged over heads."""
    batch, count, _ = tokens.shape
    qkv = attn.qkv(tokens).reshape(batch, count, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    query, key = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
    scores = (query.float() * attn.scale) @ key.float().transpose(-2, -1)
    return scores.softmax(dim=-1).mean(dim=1)


def check_attention_modules(modules: Sequence[nn.Module], owner: str) -> None:
    """Fail at build time, not mid-run, when a model's attention is not the timm layout we read."""
    needed = ("qkv", "num_heads", "scale", "q_norm", "k_norm")
    for index, module in enumerate(modules):
        missing = [name for name in needed if not hasattr(module, name)]
        if missing:
            raise ValueError(
                f"{owner}: attention module {index} ({type(module).__name__}) lacks {missing}; "
                "model.refine: attention needs timm-style Attention blocks"
            )


class AttentionRecorder:
    """Sum over layers of head-averaged attention among patch tokens (prefix tokens dropped)."""

    def __init__(self, modules: Sequence[nn.Module], num_prefix_tokens: int):
        self.modules = list(modules)
        self.num_prefix_tokens = num_prefix_tokens

    @contextlib.contextmanager
    def record(self) -> Iterator[dict[str, torch.Tensor]]:
        """Yield a dict that holds ``"attention"`` (B, hw, hw) once the forward pass has run."""
        result: dict[str, torch.Tensor] = {}
        prefix = self.num_prefix_tokens

        def hook(module: nn.Module, args: tuple) -> None:
            layer = attention_weights(module, args[0])[:, prefix:, prefix:]
            result["attention"] = result["attention"] + layer if "attention" in result else layer

        handles = [module.register_forward_pre_hook(hook) for module in self.modules]
        try:
            yield result
        finally:
            for handle in handles:
                handle.remove()


def attention_refine(attention: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """``refined[:, c] = A @ maps_flat[:, c]`` for every channel; A (B, hw, hw), maps (B, C, h, w)."""
    batch, channels, height, width = maps.shape
    if attention.shape != (batch, height * width, height * width):
        raise ValueError(
            f"attention {tuple(attention.shape)} does not fit maps {tuple(maps.shape)}: "
            f"expected ({batch}, {height * width}, {height * width})"
        )
    flat = maps.float().flatten(2)
    return torch.einsum("bij,bcj->bci", attention.float(), flat).reshape(batch, channels, height, width)
