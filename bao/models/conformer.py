"""Conformer (Peng et al., ICCV 2021) as TransCAM uses it (Li et al., 2023), written for this project.

A CNN branch (ResNet-style bottlenecks) and a transformer branch run side by side; after every
transformer block the two exchange features: the CNN's mid-level map is pooled and projected
into the token sequence ("squeeze"), and the tokens are projected back and added inside the next
bottleneck ("expand"). Module and parameter names follow the published Conformer checkpoints
(``conv1``, ``bn1``, ``conv_1``, ``trans_patch_conv``, ``trans_1``, ``conv_trans_<i>.{cnn_block,
fusion_block,squeeze_block,expand_block,trans_block}``, ``trans_norm``, ``conv_cls_head``,
``trans_cls_head``, ``cls_token``), so official ImageNet or TransCAM weights load by name.

Two choices follow TransCAM rather than the ImageNet model: the last fusion bottleneck keeps
stride 1 (same parameters), so the CNN's last map has the 1/16 resolution of the token grid, and
the CNN classifier is TransCAM's: a 3x3 convolution with bias, ``conv_cls_head`` (K+1, D, 3, 3),
with ``trans_cls_head`` (K+1, E) beside it. Both have K+1 outputs as in the released TransCAM
and BAO checkpoints (21 for VOC): output 0 is a background slot that nothing trains or reads, so
those checkpoints load completely. The CAMs are outputs 1..K of the convolution, bias included
(after attention refinement the bias counts once per unit of attention row sum, as officially);
the CNN logits are their spatial means, and the image logits CNN + transformer (class token)
logits. An ImageNet checkpoint's Linear heads (1000 classes) do not fit and are skipped with a
warning that names them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block
from torch import nn
from torch.nn import functional as F

from bao.data.transforms import IMAGENET
from bao.models.attention import AttentionRecorder
from bao.models.geometry import FeatureGeometry

BN_EPS = 1e-6  # the official bottlenecks and expand units use eps 1e-6; the stem BN keeps 1e-5
TokenNorm = partial(nn.LayerNorm, eps=1e-6)
GRID = 16  # input sides must be multiples of the token grid's stride


@dataclass(frozen=True)
class ConformerSpec:
    embed_dim: int
    depth: int
    num_heads: int
    channel_ratio: int
    patch_size: int = 16
    base_channel: int = 64
    stem_channels: int = 64
    mlp_ratio: float = 4.0
    drop_path: float = 0.1  # TransCAM's stochastic depth


# Patch-16 variants only: a patch-32 model's token grid (1/32) would not match its CAMs (1/16).
CONFORMER_VARIANTS: dict[str, ConformerSpec] = {
    "conformer_tiny_patch16": ConformerSpec(embed_dim=384, depth=12, num_heads=6, channel_ratio=1),
    "conformer_small_patch16": ConformerSpec(embed_dim=384, depth=12, num_heads=6, channel_ratio=4),
    "conformer_base_patch16": ConformerSpec(embed_dim=576, depth=12, num_heads=9, channel_ratio=6),
    # a few-second CPU model for tests and smoke runs (not a published model)
    "conformer_test": ConformerSpec(embed_dim=32, depth=3, num_heads=2, channel_ratio=1, base_channel=16, stem_channels=16, drop_path=0.0),
}


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1 with a residual; the transformer's map may join before the 3x3.

    Returns the block output and the activated 3x3 output (the map the transformer reads)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, project: bool = False):
        super().__init__()
        mid = out_channels // 4
        self.conv1 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self.conv3 = nn.Conv2d(mid, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels, eps=BN_EPS)
        if project:
            self.residual_conv = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
            self.residual_bn = nn.BatchNorm2d(out_channels, eps=BN_EPS)
        self.project = project

    def forward(self, x: torch.Tensor, injected: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = F.relu(self.bn1(self.conv1(x)))
        if injected is not None:
            hidden = hidden + injected
        mid = F.relu(self.bn2(self.conv2(hidden)))
        shortcut = self.residual_bn(self.residual_conv(x)) if self.project else x
        return F.relu(self.bn3(self.conv3(mid)) + shortcut), mid


class Squeeze(nn.Module):
    """CNN map -> patch tokens: 1x1 projection, average pooling to the grid, LayerNorm, GELU."""

    def __init__(self, in_channels: int, embed_dim: int, stride: int):
        super().__init__()
        self.conv_project = nn.Conv2d(in_channels, embed_dim, 1)
        self.pool = nn.AvgPool2d(stride, stride) if stride > 1 else nn.Identity()
        self.ln = TokenNorm(embed_dim)

    def forward(self, feature_map: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        patches = F.gelu(self.ln(self.pool(self.conv_project(feature_map)).flatten(2).transpose(1, 2)))
        if patches.shape[1] != tokens.shape[1] - 1:
            raise ValueError(f"conformer: CNN grid gives {patches.shape[1]} tokens, transformer has {tokens.shape[1] - 1}")
        return torch.cat([tokens[:, :1], patches], dim=1)


class Expand(nn.Module):
    """Patch tokens -> CNN map: 1x1 projection, BatchNorm, ReLU, nearest upsampling to the CNN map."""

    def __init__(self, embed_dim: int, out_channels: int):
        super().__init__()
        self.conv_project = nn.Conv2d(embed_dim, out_channels, 1)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
        patches = tokens[:, 1:].transpose(1, 2).reshape(tokens.shape[0], -1, *grid)
        return F.interpolate(F.relu(self.bn(self.conv_project(patches))), size=size, mode="nearest")


class ConvTransBlock(nn.Module):
    """One CNN bottleneck, one transformer block, and the two-way exchange between them."""

    def __init__(self, spec: ConformerSpec, in_channels: int, out_channels: int, stride: int, *, token_stride: int, last: bool, drop_path: float):
        super().__init__()
        mid = out_channels // 4
        self.cnn_block = Bottleneck(in_channels, out_channels, stride, project=in_channels != out_channels or stride != 1)
        self.fusion_block = Bottleneck(out_channels, out_channels, 1, project=last)
        self.squeeze_block = Squeeze(mid, spec.embed_dim, token_stride)
        self.expand_block = Expand(spec.embed_dim, mid)
        self.trans_block = Block(spec.embed_dim, spec.num_heads, spec.mlp_ratio, qkv_bias=True, drop_path=drop_path, norm_layer=TokenNorm)
        self.token_stride = token_stride

    def forward(self, x: torch.Tensor, tokens: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        x, mid = self.cnn_block(x)
        # As in the published model, the class token is added to itself here (squeeze keeps it).
        tokens = self.trans_block(self.squeeze_block(mid, tokens) + tokens)
        x, _ = self.fusion_block(x, self.expand_block(tokens, grid, tuple(mid.shape[-2:])))
        return x, tokens


class Conformer(nn.Module):
    """The whole TransCAM network; ``forward`` gives features, CAMs, logits and, if asked, attention."""

    has_attention = True
    head_prefixes = ("conv_cls_head.", "trans_cls_head.")
    normalization = IMAGENET  # the official Conformer and TransCAM weights were trained on ImageNet statistics

    def __init__(self, spec: ConformerSpec, num_classes: int):
        super().__init__()
        if spec.depth % 3 or spec.patch_size != GRID:
            raise ValueError(f"conformer: depth must be a multiple of 3 and patch size {GRID}, got {spec}")
        first = spec.base_channel * spec.channel_ratio
        self.num_classes = num_classes
        self.out_channels = 4 * first
        self.cls_token = nn.Parameter(torch.zeros(1, 1, spec.embed_dim))
        self.conv1 = nn.Conv2d(3, spec.stem_channels, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(spec.stem_channels)
        self.conv_1 = Bottleneck(spec.stem_channels, first, 1, project=True)
        self.trans_patch_conv = nn.Conv2d(spec.stem_channels, spec.embed_dim, spec.patch_size // 4, stride=spec.patch_size // 4)
        rates = torch.linspace(0, spec.drop_path, spec.depth).tolist()
        self.trans_1 = Block(spec.embed_dim, spec.num_heads, spec.mlp_ratio, qkv_bias=True, drop_path=rates[0], norm_layer=TokenNorm)
        self.stage_names = []
        for index, (in_ch, out_ch, stride, token_stride) in enumerate(_stage_layout(spec, first), start=2):
            block = ConvTransBlock(spec, in_ch, out_ch, stride, token_stride=token_stride, last=index == spec.depth, drop_path=rates[index - 1])
            self.add_module(f"conv_trans_{index}", block)
            self.stage_names.append(f"conv_trans_{index}")
        self.trans_norm = nn.LayerNorm(spec.embed_dim)
        # K+1 outputs, output 0 unused: the official layout (see the module docstring)
        self.trans_cls_head = nn.Linear(spec.embed_dim, num_classes + 1)
        self.conv_cls_head = nn.Conv2d(self.out_channels, num_classes + 1, kernel_size=3, padding=1)
        self.apply(_init_weights)
        trunc_normal_(self.cls_token, std=0.02)
        blocks = [self.trans_1, *(getattr(self, name).trans_block for name in self.stage_names)]
        self.recorder = AttentionRecorder([block.attn for block in blocks], num_prefix_tokens=1)

    def checkpoint_module(self) -> nn.Module:
        return self

    def feature_geometry(self, input_size: tuple[int, int]) -> FeatureGeometry:
        """CAMs come from the CNN branch (odd kernels, symmetric padding): cell o on pixel 16*o.
        Its tokens sit near 16*o + 6 (4x4 patches of the stride-4 stem), but they reach the CNN
        map through the residual CNN path, which dominates the cell's receptive field (measured in
        tests/test_geometry.py)."""
        return FeatureGeometry((float(GRID), float(GRID)), (0.0, 0.0))

    def forward(self, images: torch.Tensor, with_attention: bool = False) -> dict[str, torch.Tensor]:
        if images.shape[-2] % GRID or images.shape[-1] % GRID:
            raise ValueError(
                f"conformer: image size {tuple(images.shape[-2:])} is not a multiple of {GRID}; "
                "use crop sizes and pseudo_label.scales divisible by 16"
            )
        if not with_attention:
            return self._forward(images)
        with self.recorder.record() as recorded:
            outputs = self._forward(images)
        return {**outputs, "attention": recorded["attention"]}

    def _forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        stem = F.max_pool2d(F.relu(self.bn1(self.conv1(images))), 3, stride=2, padding=1)
        x, _ = self.conv_1(stem)
        patches = self.trans_patch_conv(stem)
        grid = tuple(patches.shape[-2:])
        tokens = torch.cat([self.cls_token.expand(images.shape[0], -1, -1), patches.flatten(2).transpose(1, 2)], dim=1)
        tokens = self.trans_1(tokens)
        for name in self.stage_names:
            x, tokens = getattr(self, name)(x, tokens, grid)
        cams = self.conv_cls_head(x)[:, 1:]
        logits = cams.mean(dim=(2, 3)) + self.trans_cls_head(self.trans_norm(tokens)[:, 0])[:, 1:]
        return {"features": x, "cams": cams, "logits": logits}


def _stage_layout(spec: ConformerSpec, first: int) -> list[tuple[int, int, int, int]]:
    """(in channels, out channels, CNN stride, token pooling stride) of blocks 2..depth.

    Three equal stages: channels first, 2*first, 4*first; each later stage halves the CNN
    resolution in its first block, so the token pooling stride goes 4, 2, 1 (the grid stays 1/16)."""
    per_stage = spec.depth // 3
    layout, channels = [], first
    for stage, (width, token_stride) in enumerate([(first, 4), (2 * first, 2), (4 * first, 1)]):
        count = per_stage - 1 if stage == 0 else per_stage  # trans_1 + conv_1 are stage 1's first block
        for position in range(count):
            stride = 2 if stage > 0 and position == 0 else 1
            layout.append((channels, width, stride, token_stride))
            channels = width
    return layout


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def create_conformer(name: str, num_classes: int) -> Conformer:
    if name not in CONFORMER_VARIANTS:
        raise ValueError(f"model.backbone: unknown conformer {name!r}; known: {sorted(CONFORMER_VARIANTS)}")
    return Conformer(CONFORMER_VARIANTS[name], num_classes)
