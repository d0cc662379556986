"""Typed view of params.yaml: the one place that reads it.

Every section is a pydantic model that forbids unknown keys and checks types and ranges, so a
typo such as ``bao.lamda`` fails at start with the key's dotted name instead of being ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PARAMS_FILE = "params.yaml"
SYNTHETIC_NUM_SHAPES = 8  # len(bao.data.synthetic.SYNTHETIC_CLASSES); a test keeps them equal


class Section(BaseModel):
    # allow_inf_nan=False: every float must be finite (``lr: .inf`` would train to inf weights)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _check_backbone_name(name: str, conformer: bool) -> str:
    """An unknown backbone fails when params are read, under its dotted key, not hours later."""
    from bao.models import backbone_name_problem  # lazy: bao.models imports this module, and timm is slow to import

    problem = backbone_name_problem(name, conformer=conformer)
    if problem:
        raise ValueError(problem)
    return name


class SyntheticConfig(Section):
    num_train: int = Field(ge=1)
    num_val: int = Field(ge=1)
    image_size: int = Field(ge=32)
    num_classes: int = Field(ge=1, le=SYNTHETIC_NUM_SHAPES)  # one class per shape the generator draws


class FolderConfig(Section):
    """How a plain folder dataset is split into train and val."""

    split_column: str | None = None
    val_fraction: float = Field(default=0.2, gt=0, lt=1)
    split_seed: int = 0


class DataConfig(Section):
    dataset: Literal["synthetic", "voc", "coco", "folder"]
    root: str
    train_split: str
    val_split: str
    synthetic: SyntheticConfig
    sbd_root: str | None = None
    cache_dir: str = "data/cache"
    workers: int = Field(default=2, ge=1)
    folder: FolderConfig = FolderConfig()
    # Hostile input: images over this many pixels are listed as problems (decompression bombs)
    max_image_pixels: int = Field(default=89_478_485, ge=1)
    # Files reached through ``..`` or symlinks out of root (and sbd_root) are refused unless true
    allow_outside_root: bool = False

    @model_validator(mode="after")
    def _check_splits(self) -> "DataConfig":
        if self.train_split == self.val_split:
            raise ValueError(f"train_split and val_split must differ, both are {self.train_split!r}")
        return self


class ModelConfig(Section):
    backbone: str
    pretrained: bool
    checkpoint: str | None = None
    output_stride: Literal[8, 16, 32]
    refine: Literal["none", "attention"] = "none"

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, name: str) -> str:
        return _check_backbone_name(name, conformer=True)


class LoaderConfig(Section):
    """Batch and augmentation settings shared by every training stage."""

    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    crop_size: int = Field(ge=16)
    resize_long: tuple[int, int]
    color_jitter: tuple[float, float, float, float]
    num_workers: int = Field(ge=0)
    checkpoint_every: int = Field(default=200, ge=0)  # optimizer steps between resume checkpoints; 0: epoch ends only
    lr_schedule: Literal["poly", "constant"] = "poly"  # per-iteration decay (power 0.9) or none

    @field_validator("resize_long")
    @classmethod
    def _check_resize(cls, value: tuple[int, int]) -> tuple[int, int]:
        low, high = value
        if not 0 < low <= high:
            raise ValueError("resize_long must be [min, max] with 0 < min <= max")
        return value


class CamTrainConfig(LoaderConfig):
    pass


class BaoConfig(LoaderConfig):
    eps: float = Field(ge=0, lt=1)
    lambda_: float = Field(alias="lambda", ge=0)
    fg_weight_first_epoch: float = Field(ge=0)
    # official: the weight scales both the sum and the count of the foreground term, so it cancels
    # (effectively 1.0, the official code's result); applied: the foreground half is multiplied by it
    fg_weight_mode: Literal["official", "applied"] = "official"
    lr_schedule: Literal["poly", "constant"] = "constant"  # official: constant AdamW lr
    # train: the teacher makes targets in train mode (batch-statistics BN, DropPath) and the EMA
    # covers parameters only, as in the official code; eval: eval mode, BN buffers copied too
    teacher_mode: Literal["train", "eval"] = "train"
    head_init: Literal["official", "pytorch"] = "official"  # BAO head: the official network's init / PyTorch's defaults
    checkpoint: str | None = None  # trained BAO weights (official release or ours) to load instead of training
    ema_start: float = Field(ge=0, le=1)
    ema_end: float = Field(ge=0, le=1)
    ema_period: int | None = Field(default=None, ge=1)
    # ablation switches (the paper's method is the first value of each)
    label_encoder: bool = True
    loss: Literal["balanced", "ce"] = "balanced"
    teacher: Literal["ema", "none"] = "ema"

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, populate_by_name=True)


class PseudoLabelConfig(Section):
    # item constraints, so an error names the entry (e.g. pseudo_label.scales.1)
    scales: tuple[Annotated[int, Field(gt=0)], ...] = Field(min_length=1)
    flip: bool
    thresholds: tuple[Annotated[float, Field(ge=0, lt=1)], ...] = Field(min_length=1)
    num_workers: int = Field(ge=0)
    batch_size: int = Field(default=4, ge=1)


class CrfConfig(Section):
    """Dense CRF refinement of pseudo-labels (unary from the labels, Gaussian + bilateral pairwise)."""

    enabled: bool
    iterations: int = Field(ge=1)
    gt_prob: float = Field(gt=0, lt=1)
    gaussian_sxy: float = Field(gt=0)
    gaussian_compat: float = Field(ge=0)
    bilateral_sxy: float = Field(gt=0)
    bilateral_srgb: float = Field(gt=0)
    bilateral_compat: float = Field(ge=0)
    num_workers: int = Field(ge=0)


class ReportConfig(Section):
    gallery_size: int = Field(ge=1)


class SegConfig(LoaderConfig):
    backbone: str
    pretrained: bool
    output_stride: Literal[8, 16, 32]

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, name: str) -> str:
        return _check_backbone_name(name, conformer=False)  # DeepLab reads timm feature maps only


class EvaluateConfig(Section):
    num_workers: int = Field(ge=0)


class RuntimeConfig(Section):
    """How the hardware is used; results change at most by floating-point rounding."""

    amp: bool = True
    channels_last: bool = False
    compile: bool = False
    pin_memory: bool = True
    prefetch_factor: int = Field(default=2, ge=1)


class Params(Section):
    seed: int
    device: Literal["auto", "cpu", "cuda"]
    data: DataConfig
    model: ModelConfig
    train_cam: CamTrainConfig
    bao: BaoConfig
    pseudo_label: PseudoLabelConfig
    crf: CrfConfig
    report: ReportConfig
    train_seg: SegConfig
    evaluate: EvaluateConfig
    runtime: RuntimeConfig = RuntimeConfig()


class ParamsError(ValueError):
    """params.yaml is missing, unparsable or has a bad value; the message names the key."""


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as error:
        raise ParamsError(f"{path}: file not found") from error
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        problems = [f"  {_dotted(item['loc'])}: {item['msg']}{_got(item)}" for item in error.errors()]
        raise ParamsError(f"{path}: invalid params\n" + "\n".join(problems)) from None


def _dotted(loc: tuple) -> str:
    """pydantic's error location as the key a user writes: ``bao.lambda``, ``pseudo_label.scales.1``."""
    return ".".join(str(part) for part in loc)


def _got(item: dict) -> str:
    value = item.get("input")
    return "" if isinstance(value, dict) else f" (got {value!r})"
