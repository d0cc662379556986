"""Typed views of params.yaml and runtime.yaml: the one place that reads configuration.

params.yaml holds what changes results (DVC tracks it); runtime.yaml, optional and untracked,
holds how the hardware is used (worker counts, batch size of inference, AMP, checkpoint
frequency), so changing a worker count reruns nothing. Every section is a pydantic model that
forbids unknown keys and checks types and ranges, so a typo such as ``bao.lamda`` fails at
start with the key's dotted name instead of being ignored.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PARAMS_FILE = "params.yaml"
RUNTIME_FILE = "runtime.yaml"
RUNTIME_ENV_PREFIX = "BAO_RUNTIME_"  # BAO_RUNTIME_LOADER_WORKERS=4 overrides runtime.loader_workers
# What an optional raw input (data.sbd_root, model.checkpoint) is set to when not given: DVC deps
# are templated from these keys and must name an existing path, so "none" is a committed file.
NO_INPUT = "data/none"
PILLOW_MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb limit: data.max_image_pixels' default
DEFAULT_DIST_TIMEOUT_S = 600  # runtime.dist_timeout_s' default
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
    seed: int = Field(default=0, ge=0)  # makes the demo images; separate from the training `seed`
    # how the images are drawn (defaults: bao.data.synthetic's OBJECT_SCALE etc.; a test keeps them equal)
    object_scale: tuple[Annotated[float, Field(gt=0, le=4)], Annotated[float, Field(gt=0, le=4)]] = (0.1, 1.4)
    truncation: float = Field(default=0.3, ge=0, lt=0.5)  # share of an object's box that may lie outside the image
    num_objects: tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]] = (1, 4)
    distractors: tuple[Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)]] = (0, 12)
    texture_regions: tuple[Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)]] = (0, 3)
    class_part: tuple[Annotated[float, Field(gt=0, le=1)], Annotated[float, Field(gt=0, le=1)]] = (0.1, 0.7)

    @field_validator("object_scale", "num_objects", "distractors", "texture_regions", "class_part")
    @classmethod
    def _min_max(cls, value: tuple) -> tuple:
        if value[1] < value[0]:
            raise ValueError(f"must be [min, max] with min <= max, got {list(value)}")
        return value


class FolderConfig(Section):
    """How a plain folder dataset is split into train and val."""

    split_column: str | None = None
    val_fraction: float = Field(default=0.2, gt=0, lt=1)
    split_seed: int = 0


def _no_input_is_none(value: str | None) -> str | None:
    """``data/none`` (the placeholder DVC can depend on) means the same as null: not given."""
    return None if value in (None, NO_INPUT) else value


class DataConfig(Section):
    dataset: Literal["synthetic", "voc", "coco", "folder"]
    root: str
    train_split: str
    val_split: str
    synthetic: SyntheticConfig
    sbd_root: str | None = None
    cache_dir: str = "data/cache"
    folder: FolderConfig = FolderConfig()
    # Hostile input: images over this many pixels are listed as problems (decompression bombs)
    max_image_pixels: int = Field(default=PILLOW_MAX_PIXELS, ge=1)
    # Files reached through ``..`` or symlinks out of root (and sbd_root) are refused unless true
    allow_outside_root: bool = False

    _sbd_root = field_validator("sbd_root")(_no_input_is_none)

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

    _checkpoint = field_validator("checkpoint")(_no_input_is_none)

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, name: str) -> str:
        return _check_backbone_name(name, conformer=True)

    def without_initial_weights(self) -> ModelConfig:
        """The same network with no ImageNet or checkpoint weights to load: for a model whose
        trained weights are loaded next, so they are not read (or downloaded) for nothing."""
        return self.model_copy(update={"pretrained": False, "checkpoint": None})


class LoaderConfig(Section):
    """Batch and augmentation settings shared by every training stage."""

    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    crop_size: int = Field(ge=16)
    resize_long: tuple[int, int]
    color_jitter: tuple[float, float, float, float]
    lr_schedule: Literal["poly", "constant"] = "poly"  # per-iteration decay (power 0.9) or none

    @field_validator("resize_long")
    @classmethod
    def _check_resize(cls, value: tuple[int, int]) -> tuple[int, int]:
        low, high = value
        if not 0 < low <= high:
            raise ValueError("resize_long must be [min, max] with 0 < min <= max")
        return value


class CamTrainConfig(LoaderConfig):
    # lr of the pretrained backbone; null = train_cam.lr for every parameter. The usual WSSS classifier
    # recipe (IRN, PSA) trains the new classifier 10x faster than the backbone it fine-tunes
    backbone_lr: float | None = Field(default=None, gt=0)


class BaoConfig(LoaderConfig):
    eps: float = Field(ge=0, lt=1)
    lambda_: float = Field(alias="lambda", ge=0)
    fg_weight_first_epoch: float = Field(ge=0)
    # official: the weight scales both the sum and the count of the foreground term, so it cancels
    # (effectively 1.0, the official code's result); applied: the foreground half is multiplied by it
    fg_weight_mode: Literal["official", "applied"] = "official"
    lr_schedule: Literal["poly", "constant"] = "constant"  # official: constant AdamW lr
    # lr of the trained CAM network inside the BAO network (backbone + classifier); null = bao.lr for
    # every parameter (official); 0 = frozen, BN included: its CAMs stay the CAM network's and the
    # teacher is that network itself (no EMA), while only the new head (at bao.lr) learns
    cam_lr: float | None = Field(default=None, ge=0)
    # train: the teacher makes targets in train mode (batch-statistics BN, DropPath) and the EMA
    # covers parameters only, as in the official code; eval: eval mode, BN buffers copied too
    teacher_mode: Literal["train", "eval"] = "train"
    head_init: Literal["official", "pytorch"] = "official"  # BAO head: the official network's init / PyTorch's defaults
    checkpoint: str | None = None  # trained BAO weights (official release or ours) to load instead of training
    _checkpoint = field_validator("checkpoint")(_no_input_is_none)
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
    # geometric: maps drawn where the network saw them; official: the official code's bilinear resize
    # calibrated: maps drawn where the network responds, the traced cells moved by a shift measured without
    # masks (bao.infer.calibrate) on the first calibration_images training images
    align: Literal["calibrated", "geometric", "official"] = "calibrated"
    calibration_images: int = Field(default=32, ge=1)
    # figures that say why BAO wins or loses (bao.infer.diagnose), scored on the training masks;
    # the alignment check tries every shift of BAO's labels on a grid of shift_step px within shift_max px
    # BAO's background score against the max-normalised CAMs: softmax = the student's background
    # probability (the scale its loss trained); minmax = the map's logit min-max normalised per image (official)
    background: Literal["softmax", "minmax"] = "softmax"
    diagnose: bool = True
    shift_max: int = Field(default=8, ge=0, le=64)
    shift_step: int = Field(default=2, ge=1)

    @field_validator("thresholds")
    @classmethod
    def _increasing(cls, thresholds: tuple[float, ...]) -> tuple[float, ...]:
        """Ties between thresholds go to the smallest t, which is the first only in increasing order."""
        for index, (low, high) in enumerate(zip(thresholds, thresholds[1:]), start=1):
            if high <= low:
                raise ValueError(f"must increase strictly: entry {index} ({high}) follows {low}")
        return thresholds


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


class ReportConfig(Section):
    gallery_size: int = Field(ge=1)


class SegConfig(LoaderConfig):
    backbone: str
    pretrained: bool
    output_stride: Literal[8, 16, 32]
    # which pseudo-labels DeepLab learns from: BAO's (threshold-free) or the CAM baseline's at
    # background threshold ``threshold`` (written by pseudo_label beside BAO's), the comparison papers report;
    # masks: the training images' true masks, full supervision, the ceiling papers quote beside their result
    labels: Literal["bao", "threshold", "masks"] = "bao"
    threshold: float = Field(default=0.5, ge=0, lt=1)
    # lr of the ImageNet-pretrained encoder; null = train_seg.lr for every parameter. The usual DeepLab
    # recipe trains the new ASPP head 10x faster than the encoder it fine-tunes
    backbone_lr: float | None = Field(default=None, gt=0)
    # where DeepLab's encoder starts: imagenet = the backbone's pretrained weights (train_seg.pretrained, the
    # usual recipe); cam_network = the trained CAM network's backbone, which has learnt these classes from the
    # image labels (needs train_seg.backbone = model.backbone)
    encoder_init: Literal["imagenet", "cam_network"] = "imagenet"
    # the scale val images are segmented at: train = long side resized to the middle of resize_long (the
    # scale DeepLab learned at), logits drawn back at full size; native = the image's own size
    eval_resize: Literal["train", "native"] = "train"

    def eval_long_side(self) -> int | None:
        """The long side val images are resized to before prediction; None: their own size."""
        return round(sum(self.resize_long) / 2) if self.eval_resize == "train" else None

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, name: str) -> str:
        return _check_backbone_name(name, conformer=False)  # DeepLab reads timm feature maps only


class RuntimeConfig(Section):
    """How the hardware is used (runtime.yaml); results change at most by floating-point rounding.

    Not a DVC param: a different worker count or batch size of inference reruns nothing.
    """

    amp: bool = True  # CUDA mixed precision: bf16 where supported, else fp16 + GradScaler; CPU stays fp32
    channels_last: bool = True  # NHWC memory layout for conv nets (benchmarks: faster on CPU too, with BatchNorm folded at inference)
    fold_batchnorm: bool = True  # inference runs a copy with BatchNorm folded into its convolutions (bao.models.fold)
    compile: bool = False  # torch.compile the trained model
    pin_memory: bool = True  # page-locked batches (CUDA only)
    prefetch_factor: int = Field(default=2, ge=1)  # batches each DataLoader worker prepares ahead
    loader_workers: int = Field(default=0, ge=0)  # DataLoader worker processes in every stage; 0 = in the stage's process
    inference_batch_size: int = Field(default=4, ge=1)  # images per forward pass in pseudo_label
    io_threads: int = Field(default=2, ge=1)  # threads decoding images in prepare and scoring masks in evaluate
    crf_workers: int = Field(default=2, ge=0)  # CRF worker processes; 0 = in the stage's process
    checkpoint_every: int = Field(default=200, ge=0)  # optimizer steps between resume checkpoints (and each epoch end); 0 = epoch ends only
    dist_timeout_s: int = Field(default=DEFAULT_DIST_TIMEOUT_S, ge=1)  # torchrun: longest wait of one process for the others (a stuck peer)


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

    @model_validator(mode="after")
    def _check_encoder_init(self) -> "Params":
        if self.train_seg.encoder_init == "cam_network" and self.train_seg.backbone != self.model.backbone:
            raise ValueError(f"train_seg.encoder_init: cam_network starts DeepLab's encoder from the CAM network's backbone, so "
                             f"train_seg.backbone ({self.train_seg.backbone}) must be model.backbone ({self.model.backbone})")
        return self


class ParamsError(ValueError):
    """params.yaml is missing, unparsable or has a bad value; the message names the key."""


def _read_mapping(path: Path) -> dict:
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as error:
        raise ParamsError(f"{path}: file not found") from error
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML: {error}") from error
    if raw is None and path.name != PARAMS_FILE:
        return {}  # an empty runtime.yaml: every default
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    return raw


def _validate(model: type[BaseModel], raw: dict, source: str, prefix: str = ""):
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        problems = [f"  {_dotted(item['loc'], prefix)}: {item['msg']}{_got(item)}{_moved(item)}" for item in error.errors()]
        raise ParamsError(f"{source}: invalid {'runtime settings' if prefix else 'params'}\n" + "\n".join(problems)) from None


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    path = Path(path)
    return _validate(Params, _read_mapping(path), str(path))


def load_runtime(
    path: str | Path | None = RUNTIME_FILE, environ: Mapping[str, str] | None = None, *, must_exist: bool = False
) -> RuntimeConfig:
    """runtime.yaml (optional unless ``must_exist``: every key has a default), then
    ``BAO_RUNTIME_<KEY>`` environment overrides (e.g. ``BAO_RUNTIME_LOADER_WORKERS=4``); errors
    name ``runtime.<key>`` and the source."""
    environ = os.environ if environ is None else environ
    raw: dict = {}
    sources = []
    if path is not None and (must_exist or Path(path).is_file()):
        raw = _read_mapping(Path(path))
        sources.append(str(path))
    for name, value in environ.items():
        if name.startswith(RUNTIME_ENV_PREFIX):
            key = name[len(RUNTIME_ENV_PREFIX):].lower()
            try:
                raw[key] = yaml.safe_load(value)
            except yaml.YAMLError as error:
                raise ParamsError(f"{name}: not a valid value: {error}") from None
            sources.append(name)
    return _validate(RuntimeConfig, raw, " + ".join(sources) or "runtime defaults", prefix="runtime")


def _dotted(loc: tuple, prefix: str = "") -> str:
    """pydantic's error location as the key a user writes: ``bao.lambda``, ``pseudo_label.scales.1``."""
    return ".".join(str(part) for part in (prefix, *loc) if part != "")


MOVED_TO_RUNTIME = {"runtime", "num_workers", "workers", "checkpoint_every", "batch_size"}


def _moved(item: dict) -> str:
    """Hardware knobs that used to be params: say where they live now."""
    if item["type"] == "extra_forbidden" and item["loc"][-1] in MOVED_TO_RUNTIME:
        return " (hardware settings live in runtime.yaml now, see runtime.example.yaml)"
    return ""


def _got(item: dict) -> str:
    value = item.get("input")
    return "" if isinstance(value, dict) else f" (got {value!r})"
