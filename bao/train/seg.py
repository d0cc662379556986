"""Stage 5: DeepLabV3 trained on the pseudo-labels as if they were ground truth."""

from __future__ import annotations

from pathlib import Path

import torch

from bao.config import ModelConfig, RuntimeConfig, SegConfig
from bao.data.datasets import ImageLabelDataset
from bao.data.manifest import Manifest
from bao.data.transforms import train_transform
from bao.losses import segmentation_loss
from bao.models import create_cam_net, create_deeplab
from bao.models.backbones import load_state_strict
from bao.models.deeplab import DeepLabV3
from bao.train.checkpoint import resume_hook, run_fingerprint
from bao.train.common import LiveHook, backbone_lr_groups, load_model_state, training_parts
from bao.train.engine import train_loop


def training_labels_dir(cfg: SegConfig, *, bao: str | Path, threshold: str | Path) -> str | Path | None:
    """The pseudo-label directory ``train_seg.labels`` names: BAO's, or the CAM labels at ``train_seg.threshold``;
    None for ``masks`` (the dataset's own masks of the training images)."""
    return {"bao": bao, "threshold": threshold, "masks": None}[cfg.labels]


def check_training_masks(manifest: Manifest) -> None:
    """``train_seg.labels: masks`` needs a true mask for every training image: say so before training."""
    rows = manifest.split("train")
    missing = rows.loc[rows["mask_path"] == "", "image_id"].tolist()
    if missing:
        raise ValueError(
            f"train_seg.labels: masks needs the true mask of every training image, but {len(missing)} of {len(rows)} "
            f"have none (e.g. {missing[:3]}); use bao or threshold"
        )


def seg_param_groups(model: DeepLabV3, cfg: SegConfig) -> list[dict] | None:
    """AdamW's groups: the new head at ``train_seg.lr``, the pretrained encoder at ``train_seg.backbone_lr``
    (None when that is null: one lr for every parameter)."""
    return backbone_lr_groups(model, lr=cfg.lr, backbone_lr=cfg.backbone_lr, key="train_seg.backbone_lr")


def encoder_from_cam_network(model: DeepLabV3, cam_checkpoint: str | Path, model_cfg: ModelConfig, classes) -> None:
    """``train_seg.encoder_init: cam_network``: DeepLab's encoder takes the trained CAM network's backbone
    weights (the same timm backbone; the output stride changes dilations, not weights)."""
    cam_net = create_cam_net(model_cfg.without_initial_weights(), len(classes))
    load_model_state(cam_checkpoint, cam_net, classes)
    load_state_strict(model.backbone, cam_net.backbone.state_dict(), cam_checkpoint)


def train_segmentation_net(
    manifest: Manifest,
    pseudo_label_dir: str | Path | None,
    cfg: SegConfig,
    *,
    device: torch.device,
    seed: int,
    live,
    resume_dir: str | Path | None = None,
    runtime: RuntimeConfig | None = None,
    cam_checkpoint: str | Path | None = None,
    model_cfg: ModelConfig | None = None,
) -> tuple[torch.nn.Module, dict[str, float]]:
    """``pseudo_label_dir``: the labels to learn from; None: the manifest's true masks (``train_seg.labels:
    masks``). ``resume_dir``: where the resume checkpoint lives (None: no checkpoints). ``cam_checkpoint``
    and ``model_cfg``: the trained CAM network, for ``train_seg.encoder_init: cam_network``."""
    runtime = runtime or RuntimeConfig()
    from_cam = cfg.encoder_init == "cam_network"
    if from_cam and (cam_checkpoint is None or model_cfg is None):
        raise ValueError("train_seg.encoder_init: cam_network needs the trained CAM network (--cam-model) and the model params")
    model = create_deeplab(cfg.backbone, manifest.num_classes + 1, cfg.pretrained and not from_cam, cfg.output_stride)
    if from_cam:
        encoder_from_cam_network(model, cam_checkpoint, model_cfg, manifest.classes)
    transform = train_transform(cfg.crop_size, cfg.resize_long, cfg.color_jitter, normalization=model.normalization)
    if pseudo_label_dir is None:
        check_training_masks(manifest)
        dataset = ImageLabelDataset(manifest, "train", transform, mask_source="manifest")
    else:
        dataset = ImageLabelDataset(manifest, "train", transform, mask_source="dir", mask_dir=pseudo_label_dir)
    loader, net, optimizer, scheduler = training_parts(model, dataset, cfg, seed=seed, device=device, runtime=runtime, param_groups=seg_param_groups(model, cfg))

    def step(batch: dict, state) -> dict[str, torch.Tensor]:
        return {"loss_seg": segmentation_loss(net(batch["image"]), batch["mask"])}

    inputs = [*([pseudo_label_dir] if pseudo_label_dir is not None else []), *([cam_checkpoint] if from_cam else [])]
    checkpoint = resume_hook(resume_dir, runtime.checkpoint_every, run_fingerprint([cfg, *([model_cfg] if from_cam else [])], seed, manifest, inputs))
    hooks = [LiveHook(live, optimizer)]
    state = train_loop(
        step, model, loader, optimizer, scheduler=scheduler, epochs=cfg.epochs, device=device, hooks=hooks, description="train_seg",
        checkpoint=checkpoint, amp=runtime.amp, channels_last=runtime.channels_last,
    )
    return model, {"final_loss": state.history[-1]["loss"]}
