"""Reliability: resume after a crash, atomic outputs, safe checkpoint loading, NaN stops, params checks."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import shutil
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from bao.config import SYNTHETIC_NUM_SHAPES, ParamsError, load_params
from bao.data.synthetic import SYNTHETIC_CLASSES
from bao.io import CheckpointError, atomic_dir, atomic_outputs, write_json
from bao.models import create_cam_net
from bao.runtime import seed_everything
from bao.stage import live_logger, resume_dir
from bao.train.bao import TeacherHook
from bao.train.checkpoint import RESUME_FILE, CheckpointHook
from bao.train.common import LiveHook, load_model_state, make_loader, save_model
from bao.train.ema import TeacherSchedule
from bao.train.engine import Hook, create_optimizer, create_scheduler, train_loop
from pipeline_utils import RecordingLive

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


# --- a toy run that exercises everything a resume must restore -------------------------------

class NoisyDataset(Dataset):
    """'Augmentation' drawn from torch, numpy and python RNGs: a resume must restore all three."""

    def __init__(self, size: int = 10):
        self.x = torch.linspace(-1, 1, size * 4).view(size, 4)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict:
        noise = torch.rand(4) + float(np.random.rand()) + random.random()
        return {"x": self.x[index] + 0.1 * noise, "y": self.x[index].sum(0, keepdim=True)}


class Crash(Exception):
    pass


class CrashHook(Hook):
    """Dies after global step ``at`` (before the checkpoint hook, which runs last, could save it)."""

    def __init__(self, at: int | None):
        self.at = at

    def after_step(self, state, losses) -> None:
        if state.step == self.at:
            raise Crash(f"crash at step {state.step}")


def toy_run(directory: Path | None, crash_at: int | None = None, *, every: int = 2, nan_at: int | None = None, fingerprint: str = "f"):
    """3 epochs of 3 batches with an EMA teacher, DVCLive logging and a resume checkpoint."""
    seed_everything(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    teacher = copy.deepcopy(model).requires_grad_(False)
    loader = make_loader(NoisyDataset(10), 3, shuffle=True, num_workers=0, seed=0, drop_last=True)
    optimizer = create_optimizer(model.parameters(), 1e-2, 1e-4)
    scheduler = create_scheduler(optimizer, 3 * len(loader))
    live = RecordingLive()
    hooks = [TeacherHook(teacher, model, TeacherSchedule(0.9, 1.0, 3)), LiveHook(live, optimizer), CrashHook(crash_at)]

    def step(batch, state):
        if nan_at is not None and state.step + 1 == nan_at:
            return {"loss_mse": torch.tensor(float("nan"), requires_grad=True)}
        return {"loss_mse": F.mse_loss(model(batch["x"]), batch["y"])}

    checkpoint = CheckpointHook(directory, fingerprint, every) if directory is not None else None
    state = train_loop(step, model, loader, optimizer, scheduler=scheduler, epochs=3, device=CPU, hooks=hooks, description="toy", checkpoint=checkpoint)
    return {"model": model.state_dict(), "teacher": teacher.state_dict(), "history": state.history,
            "live": live.rows, "lr": optimizer.param_groups[0]["lr"], "step": state.step}


def assert_same_run(a: dict, b: dict) -> None:
    for key in ("model", "teacher"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs"
    assert a["history"] == b["history"] and a["live"] == b["live"] and a["lr"] == b["lr"] and a["step"] == b["step"]


@pytest.fixture(scope="module")
def uninterrupted():
    return toy_run(None)


@pytest.mark.parametrize("crashes", [(3,), (5,), (7,), (5, 8), (2, 2)])
def test_resume_after_crash_matches_uninterrupted_run(tmp_path, uninterrupted, crashes):
    """Checkpoints at steps 2, 4, 8 (every=2) and 3, 6, 9 (epoch ends): crash after 3 resumes
    mid-epoch 0, after 5 mid-epoch 1, after 7 at an epoch start; (5, 8) crashes twice; (2, 2)
    crashes before any checkpoint, then again at the same point, then runs clean."""
    for crash_at in crashes:
        with pytest.raises(Crash):
            toy_run(tmp_path, crash_at)
    assert_same_run(toy_run(tmp_path), uninterrupted)


def test_rerun_after_a_finished_run_trains_nothing_and_returns_the_same(tmp_path, uninterrupted):
    """A crash after training (say in validation) resumes at the end: no epoch is trained twice."""
    toy_run(tmp_path)
    assert_same_run(toy_run(tmp_path, crash_at=1), uninterrupted)  # step 1 never runs again, so no crash


def test_resume_restores_mid_epoch_position(tmp_path):
    with pytest.raises(Crash):
        toy_run(tmp_path, crash_at=5)
    checkpoint = torch.load(tmp_path / RESUME_FILE, weights_only=True)
    assert (checkpoint["epoch"], checkpoint["batches_done"], checkpoint["step"], checkpoint["epoch_finished"]) == (1, 1, 4, False)


def test_checkpoint_with_other_fingerprint_is_ignored(tmp_path, uninterrupted, caplog):
    with pytest.raises(Crash):
        toy_run(tmp_path, crash_at=5, fingerprint="old params")
    result = toy_run(tmp_path, fingerprint="new params")
    assert "ignoring" in caplog.text and str(tmp_path / RESUME_FILE) in caplog.text
    assert_same_run(result, uninterrupted)  # trained from the start, not from the stale state


def test_truncated_resume_checkpoint_names_the_file(tmp_path):
    with pytest.raises(Crash):
        toy_run(tmp_path, crash_at=5)
    path = tmp_path / RESUME_FILE
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=re.escape(str(path)) + ".*truncated.*delete"):
        toy_run(tmp_path)


def test_nan_loss_stops_with_step_and_last_finite_loss_and_keeps_last_checkpoint(tmp_path):
    with pytest.raises(FloatingPointError) as error:
        toy_run(tmp_path, every=1, nan_at=5)
    checkpoint = torch.load(tmp_path / RESUME_FILE, weights_only=True)
    message = str(error.value)
    assert "loss became nan at step 5 (epoch 2, batch 2/3)" in message
    assert f"last finite loss: {checkpoint['last_finite_loss']} (step 4)" in message
    assert checkpoint["step"] == 4  # the save after step 4, not overwritten by the NaN step
    assert all(torch.isfinite(value).all() for value in checkpoint["model"].values())


def _diverge_at(step_number: int):
    """A hook that sets the learning rate to inf once ``step_number - 1`` steps are done, so the
    optimizer step of ``step_number`` turns the weights non-finite from a finite loss."""
    class Diverge(Hook):
        def __init__(self):
            self.optimizer = None

        def after_step(self, state, losses) -> None:
            if state.step == step_number - 1:
                for group in self.optimizer.param_groups:
                    group["lr"] = float("inf")
    return Diverge()


def test_non_finite_weights_after_a_step_stop_naming_the_step_and_keep_the_last_checkpoint(tmp_path):
    """``lr: .inf`` used to save a model with NaN tensors and exit 0: the NaN guard looked at the
    loss, which is computed before the update."""
    seed_everything(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    loader = make_loader(NoisyDataset(9), 3, shuffle=True, num_workers=0, seed=0, drop_last=True)
    optimizer = create_optimizer(model.parameters(), 1e-2, 1e-4)
    diverge = _diverge_at(5)
    diverge.optimizer = optimizer

    def step(batch, state):
        return {"loss_mse": F.mse_loss(model(batch["x"]), batch["y"])}

    checkpoint = CheckpointHook(tmp_path, "f", 1)
    with pytest.raises(FloatingPointError) as error:
        train_loop(step, model, loader, optimizer, scheduler=None, epochs=3, device=CPU, hooks=[diverge], description="toy", checkpoint=checkpoint)
    message = str(error.value)
    assert "weights became non-finite in the optimizer step of step 5 (epoch 2, batch 2/3)" in message
    assert "last good checkpoint is kept" in message
    saved = torch.load(tmp_path / RESUME_FILE, weights_only=True)
    assert saved["step"] == 4 and all(torch.isfinite(value).all() for value in saved["model"].values())


def test_inf_learning_rate_stops_at_step_one():
    model = nn.Linear(4, 1)
    loader = make_loader(NoisyDataset(4), 2, shuffle=True, num_workers=0, seed=0)

    def step(batch, state):
        return {"loss": F.mse_loss(model(batch["x"]), batch["y"])}

    with pytest.raises(FloatingPointError, match=r"non-finite in the optimizer step of step 1 \(epoch 1, batch 1/2\): 2 of 2 parameter tensors"):
        train_loop(step, model, loader, create_optimizer(model.parameters(), float("inf"), 0), scheduler=None, epochs=1, device=CPU)


def test_a_model_with_non_finite_weights_is_never_saved(tmp_path):
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=re.escape(f"{tmp_path / 'cam.pt'}: not saved, 1 of 2 tensors are not finite, e.g. ['bias']")):
        save_model(tmp_path / "cam.pt", model, {})
    assert list(tmp_path.iterdir()) == []


def test_inf_loss_also_stops(tmp_path):
    def step(batch, state):
        return {"loss": torch.tensor(float("inf"), requires_grad=True)}

    model = nn.Linear(4, 1)
    loader = make_loader(NoisyDataset(4), 2, shuffle=True, num_workers=0, seed=0)
    with pytest.raises(FloatingPointError, match=r"loss became inf at step 1 .*last finite loss: None"):
        train_loop(step, model, loader, create_optimizer(model.parameters(), 0.1, 0), scheduler=None, epochs=1, device=CPU)


# --- stage-level: the resume directory and atomic outputs -------------------------------------

def test_resume_dir_is_removed_only_after_success(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError), resume_dir("checkpoints/train_cam") as directory:
        directory.mkdir(parents=True)
        (directory / RESUME_FILE).write_bytes(b"x")
        raise RuntimeError("killed")
    assert (tmp_path / "checkpoints/train_cam" / RESUME_FILE).exists()
    with resume_dir("checkpoints/train_cam") as directory:
        pass
    assert not (tmp_path / "checkpoints").exists()


def test_resume_checkpoints_are_ignored_by_git_and_not_dvc_outputs():
    assert "/checkpoints" in (REPO / ".gitignore").read_text().splitlines()
    from pipeline_utils import declared_outputs

    declared = [path for paths in declared_outputs(REPO).values() for path in paths]
    assert "models/cam.pt" in declared and not [path for path in declared if path.startswith("checkpoints")]


def _no_temp_left(directory: Path) -> bool:
    return not [path for path in directory.iterdir() if path.name.startswith(".")]


@contextlib.contextmanager
def staged_live(directory):
    """DVCLive in a staging directory that replaces ``directory`` on success, as the stages use it."""
    with atomic_outputs(directory) as (staging,), live_logger(staging) as live:
        yield live


def test_failed_dvclive_run_leaves_previous_metrics_and_plots(tmp_path):
    target = tmp_path / "dvclive/train_cam"
    with staged_live(target) as live:
        live.log_metric("train/loss", 1.0)
        live.next_step()
        live.summary["final_loss"] = 1.0
    before = {path: path.read_bytes() for path in target.rglob("*") if path.is_file()}
    with pytest.raises(RuntimeError), staged_live(target) as live:
        live.log_metric("train/loss", 2.0)
        live.next_step()
        raise RuntimeError("killed mid-training")
    assert {path: path.read_bytes() for path in target.rglob("*") if path.is_file()} == before
    assert json.loads((target / "metrics.json").read_text())["final_loss"] == 1.0
    assert _no_temp_left(target.parent)


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775), (0o077, 0o600, 0o700)])
def test_outputs_get_the_umask_permissions_not_mkstemps(tmp_path, umask, file_mode, dir_mode):
    """mkstemp/mkdtemp made every output 0600/0700, git-tracked metrics included."""
    from bao.io import save_torch

    old = os.umask(umask)
    try:
        write_json(tmp_path / "metrics.json", {"miou": 0.5})
        save_torch(tmp_path / "cam.pt", {"w": torch.zeros(1)})
        with atomic_dir(tmp_path / "pseudo_labels") as staging:
            (staging / "a.png").write_bytes(b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == file_mode
    assert (tmp_path / "cam.pt").stat().st_mode & 0o777 == file_mode
    assert (tmp_path / "pseudo_labels").stat().st_mode & 0o777 == dir_mode


def test_failed_json_write_leaves_previous_file(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(path, {"miou": 0.5})
    with pytest.raises(TypeError):
        write_json(path, {"miou": object()})
    assert json.loads(path.read_text()) == {"miou": 0.5} and _no_temp_left(tmp_path)


def test_temp_files_of_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    (tmp_path / ".cam.pt.abc123.tmp.pt").write_bytes(b"half")
    (tmp_path / ".pseudo_labels.xyz.tmp").mkdir()
    (tmp_path / ".pseudo_labels.xyz.tmp/1.png").write_bytes(b"half")
    write_json(tmp_path / "cam.pt", {})
    with atomic_dir(tmp_path / "pseudo_labels"):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cam.pt", "pseudo_labels"]


def test_failed_directory_write_leaves_previous_directory(tmp_path):
    target = tmp_path / "pseudo_labels"
    with atomic_dir(target) as staging:
        (staging / "a.png").write_bytes(b"old")
    with pytest.raises(OSError), atomic_dir(target) as staging:
        (staging / "a.png").write_bytes(b"new")
        raise OSError("disk full")
    assert [p.name for p in target.iterdir()] == ["a.png"] and (target / "a.png").read_bytes() == b"old"
    assert _no_temp_left(tmp_path)


# --- checkpoint loading: wrong model, wrong classes, truncated file ---------------------------

@pytest.fixture(scope="module")
def cam_checkpoint(tmp_path_factory) -> Path:
    from bao.config import ModelConfig

    path = tmp_path_factory.mktemp("ckpt") / "cam.pt"
    model = create_cam_net(ModelConfig(backbone="test_resnet", pretrained=False, output_stride=16), 3)
    save_model(path, model, {"classes": ["disc", "square", "triangle"]})
    return path


def _cam(num_classes: int, backbone: str = "test_resnet"):
    from bao.config import ModelConfig

    return create_cam_net(ModelConfig(backbone=backbone, pretrained=False, output_stride=16), num_classes)


def test_checkpoint_loads_into_the_same_model(cam_checkpoint):
    assert load_model_state(cam_checkpoint, _cam(3), ("disc", "square", "triangle"))["classes"] == ["disc", "square", "triangle"]


def test_checkpoint_with_other_class_list_names_file_and_counts(cam_checkpoint):
    with pytest.raises(CheckpointError, match=re.escape(str(cam_checkpoint)) + r": trained for 3 classes .* dataset has 4"):
        load_model_state(cam_checkpoint, _cam(4), ("disc", "square", "triangle", "star"))


def test_checkpoint_with_other_class_count_and_no_class_list_reports_shapes(cam_checkpoint):
    with pytest.raises(CheckpointError, match=re.escape(str(cam_checkpoint)) + r": checkpoint does not fit .*shape mismatch.*\(4, "):
        load_model_state(cam_checkpoint, _cam(4))


def test_checkpoint_of_another_model_names_file_and_keys(cam_checkpoint):
    with pytest.raises(CheckpointError, match=re.escape(str(cam_checkpoint)) + r": checkpoint does not fit .*(missing|unexpected) keys"):
        load_model_state(cam_checkpoint, nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(CheckpointError, match=re.escape(str(cam_checkpoint))):
        load_model_state(cam_checkpoint, _cam(3, backbone="resnet18"))


def test_truncated_checkpoint_names_the_file(cam_checkpoint, tmp_path):
    truncated = tmp_path / "cam.pt"
    truncated.write_bytes(cam_checkpoint.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=re.escape(str(truncated)) + r": cannot read checkpoint \(truncated"):
        load_model_state(truncated, _cam(3))


class _Touch:
    """Unpickling this runs ``Path.touch(marker)``: what a hostile checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": NoisyDataset(2)}, path)  # an arbitrary object: needs unpickling code
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        load_model_state(path, nn.Linear(1, 1))
    marker = tmp_path / "code_ran"
    torch.save({"model": {}, "payload": _Touch(marker)}, path)
    with pytest.raises(CheckpointError) as error:
        load_model_state(path, nn.Linear(1, 1))
    assert not marker.exists()
    assert "weights_only" not in str(error.value) and "safe_globals" not in str(error.value)  # no unsafe advice


def test_random_bytes_checkpoint_names_the_file_and_never_suggests_weights_only_false(tmp_path):
    path = tmp_path / "cam.pt"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(CheckpointError) as error:
        load_model_state(path, nn.Linear(1, 1))
    message = str(error.value)
    assert message.startswith(f"{path}: cannot read checkpoint (truncated, corrupt or not a PyTorch file)")
    assert "weights_only" not in message and "trusted source" not in message


# --- params validation: the error names the dotted key ------------------------------------------

def _params_error(tmp_path: Path, edit) -> str:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    edit(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError) as error:
        load_params(path)
    return str(error.value)


def _set(dotted: str, value):
    def edit(raw: dict) -> None:
        *parents, last = dotted.split(".")
        node = raw
        for key in parents:
            node = node[key]
        node[last] = value
    return edit


@pytest.mark.parametrize("dotted, value, expected", [
    ("bao.lamda", 1.0, "bao.lamda: Extra inputs are not permitted"),
    ("train_cam.epochs", "ten", "train_cam.epochs: Input should be a valid integer"),
    ("train_cam.batch_size", 0, "train_cam.batch_size: Input should be greater than or equal to 1 (got 0)"),
    ("train_seg.batch_size", -4, "train_seg.batch_size: Input should be greater than or equal to 1"),
    ("bao.lr", 0.0, "bao.lr: Input should be greater than 0"),
    ("bao.eps", 1.5, "bao.eps: Input should be less than 1"),
    ("pseudo_label.scales", [96, 0, 128], "pseudo_label.scales.1: Input should be greater than 0 (got 0)"),
    ("pseudo_label.thresholds", [0.1, 1.2], "pseudo_label.thresholds.1: Input should be less than 1"),
    ("pseudo_label.align", "corners", "pseudo_label.align: Input should be 'calibrated', 'geometric' or 'official'"),
    ("pseudo_label.calibration_images", 0, "pseudo_label.calibration_images: Input should be greater than or equal to 1"),
    ("pseudo_label.thresholds", [0.1, 0.5, 0.3], "pseudo_label.thresholds: Value error, must increase strictly: entry 2 (0.3) follows 0.5"),
    ("pseudo_label.thresholds", [0.1, 0.1], "pseudo_label.thresholds: Value error, must increase strictly: entry 1 (0.1) follows 0.1"),
    ("data.synthetic.num_classes", SYNTHETIC_NUM_SHAPES + 1, f"data.synthetic.num_classes: Input should be less than or equal to {SYNTHETIC_NUM_SHAPES}"),
    ("data.synthetic.num_classes", 0, "data.synthetic.num_classes: Input should be greater than or equal to 1"),
    ("train_cam.num_workers", 2, "train_cam.num_workers: Extra inputs are not permitted (got 2) (hardware settings live in runtime.yaml"),
    ("train_cam.resize_long", [160, 96], "train_cam.resize_long: Value error, resize_long must be [min, max]"),
    ("model.output_stride", 12, "model.output_stride: Input should be 8, 16 or 32"),
    ("device", "tpu", "device: Input should be 'auto', 'cpu' or 'cuda'"),
    # every number finite: lr .inf used to train to NaN weights and save them as a success
    ("train_cam.lr", float("inf"), "train_cam.lr: Input should be a finite number (got inf)"),
    ("bao.weight_decay", float("inf"), "bao.weight_decay: Input should be a finite number"),
    ("train_seg.lr", float("nan"), "train_seg.lr: Input should be a finite number"),
    ("bao.ema_start", float("nan"), "bao.ema_start: Input should be a finite number"),
    ("crf.bilateral_srgb", float("inf"), "crf.bilateral_srgb: Input should be a finite number"),
    ("train_cam.color_jitter", [0.3, 0.3, float("inf"), 0.0], "train_cam.color_jitter.2: Input should be a finite number"),
    ("pseudo_label.thresholds", [0.1, float("nan")], "pseudo_label.thresholds.1: Input should be a finite number"),
    ("data.folder.val_fraction", float("nan"), "data.folder.val_fraction: Input should be a finite number"),
    # every model name, by its own key
    ("train_seg.backbone", "resnet_9000", "train_seg.backbone: Value error, 'resnet_9000' is not a timm model"),
    ("train_seg.backbone", "conformer_small_patch16", "train_seg.backbone: Value error, 'conformer_small_patch16' is not a timm model"),
    ("model.backbone", "resnet_9000", "model.backbone: Value error, 'resnet_9000' is neither a timm model nor one of"),
    ("data.max_image_pixels", 0, "data.max_image_pixels: Input should be greater than or equal to 1"),
    # the demo generator's options and which labels DeepLab learns from
    ("data.synthetic.object_scale", [0.5, 0.2], "data.synthetic.object_scale: Value error, must be [min, max] with min <= max"),
    ("data.synthetic.object_scale", [0.1, 4.5], "data.synthetic.object_scale.1: Input should be less than or equal to 4"),
    ("data.synthetic.truncation", 0.5, "data.synthetic.truncation: Input should be less than 0.5"),
    ("data.synthetic.num_objects", [0, 3], "data.synthetic.num_objects.0: Input should be greater than or equal to 1"),
    ("data.synthetic.distractors", [4, 2], "data.synthetic.distractors: Value error, must be [min, max] with min <= max"),
    ("data.synthetic.texture_regions", [-1, 2], "data.synthetic.texture_regions.0: Input should be greater than or equal to 0"),
    ("data.synthetic.class_part", [0.0, 1.0], "data.synthetic.class_part.0: Input should be greater than 0"),
    ("train_seg.labels", "cam", "train_seg.labels: Input should be 'bao', 'threshold' or 'masks'"),
    ("train_seg.threshold", 1.0, "train_seg.threshold: Input should be less than 1"),
    ("train_seg.encoder_init", "coco", "train_seg.encoder_init: Input should be 'imagenet' or 'cam_network'"),
])
def test_bad_param_is_named_by_its_dotted_key(tmp_path, dotted, value, expected):
    message = _params_error(tmp_path, _set(dotted, value))
    assert str(tmp_path / "params.yaml") in message and expected in message


def test_missing_param_is_named(tmp_path):
    message = _params_error(tmp_path, lambda raw: raw["bao"].pop("eps"))
    assert "bao.eps: Field required" in message


def test_synthetic_class_limit_matches_the_generator():
    assert SYNTHETIC_NUM_SHAPES == len(SYNTHETIC_CLASSES)


def test_synthetic_option_defaults_match_the_generator():
    from bao.config import SyntheticConfig
    from bao.data import synthetic

    defaults = SyntheticConfig(num_train=1, num_val=1, image_size=32, num_classes=1)
    assert defaults.object_scale == synthetic.OBJECT_SCALE and defaults.num_objects == synthetic.NUM_OBJECTS
    assert defaults.distractors == synthetic.DISTRACTORS and defaults.texture_regions == synthetic.TEXTURE_REGIONS
    assert defaults.class_part == synthetic.CLASS_PART and defaults.truncation == synthetic.TRUNCATION


def test_train_seg_labels_default_to_bao_and_pick_their_directory():
    from bao.train.seg import training_labels_dir

    params = load_params(REPO / "params.yaml")
    assert params.train_seg.labels == "bao" and params.train_seg.threshold == 0.5
    assert training_labels_dir(params.train_seg, bao="b", threshold="t") == "b"
    threshold = params.train_seg.model_copy(update={"labels": "threshold"})
    assert training_labels_dir(threshold, bao="b", threshold="t") == "t"
    assert training_labels_dir(params.train_seg.model_copy(update={"labels": "masks"}), bao="b", threshold="t") is None


def test_default_params_are_valid():
    params = load_params(REPO / "params.yaml")
    assert params.data.sbd_root is None and params.model.checkpoint is None  # data/none: not given


# --- the real stage, killed with SIGKILL mid-epoch and rerun -----------------------------------

TINY_REPO_OVERRIDES = {
    "model": {"backbone": "test_resnet", "pretrained": False},
    "data": {"synthetic": {"num_train": 32, "num_val": 4, "image_size": 32, "num_classes": 3}},
    "train_cam": {"epochs": 2, "batch_size": 2, "crop_size": 32, "resize_long": [32, 40]},
    "pseudo_label": {"scales": [32], "flip": False, "thresholds": [0.3, 0.6]},
}


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory) -> Path:
    """A repo copy with tiny params and its prepared synthetic data."""
    import os

    from pipeline_utils import make_repo_copy, stage_argv

    import stages.prepare

    repo = make_repo_copy(tmp_path_factory.mktemp("tiny") / "repo", TINY_REPO_OVERRIDES)
    (repo / "runtime.yaml").write_text("checkpoint_every: 1\n")  # a resume checkpoint after every step
    cwd = os.getcwd()
    os.chdir(repo)
    try:
        stages.prepare.main(stage_argv(repo, "prepare"))
    finally:
        os.chdir(cwd)
    return repo


@pytest.fixture
def one_thread():
    """One torch thread: far faster than two on a busy 2-core machine, and what the subprocess gets."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _snapshot(repo: Path, *paths: str) -> dict[str, bytes]:
    files = [p for path in paths for p in ([repo / path] if (repo / path).is_file() else sorted((repo / path).rglob("*")))]
    return {str(file.relative_to(repo)): file.read_bytes() for file in files if file.is_file()}


def test_failed_pseudo_label_stage_leaves_previous_pngs_metrics_and_plot(tiny_repo, tmp_path, monkeypatch, one_thread):
    """A crash half-way through writing the PNGs (disk full, say) changes none of the stage's outputs."""
    import bao.infer.pipeline
    import stages.pseudo_label
    from bao.models import create_bao_net
    from pipeline_utils import stage_argv

    monkeypatch.chdir(tiny_repo)
    params = load_params()
    classes = ["disc", "square", "triangle"]
    torch.manual_seed(0)
    save_model("models/cam.pt", create_cam_net(params.model, 3), {"classes": classes})
    save_model("models/bao.pt", create_bao_net(params.model, 3), {"classes": classes})
    argv = stage_argv(tiny_repo, "pseudo_label")
    stages.pseudo_label.main(argv)
    outputs = ("results/pseudo_labels", "results/threshold_labels", "results/threshold_sweep.json", "plots/per_image_best_t.csv",
               "metrics/pseudo_label.json", "plots/threshold_sweep.csv", "plots/per_class_iou", "results/gallery.png")
    before = _snapshot(tiny_repo, *outputs)
    assert len([name for name in before if name.startswith("results/pseudo_labels/")]) == 32
    assert len([name for name in before if name.startswith("results/threshold_labels/")]) == 32
    # the baseline alone (python -m bao.sweep, no BAO network) gives the sweep and labels the stage wrote beside BAO's
    import bao.sweep
    alone = tmp_path / "alone"
    bao.sweep.main(["--prepared", "data/prepared", "--cam-model", "models/cam.pt", "--sweep", str(alone / "sweep.json"),
                    "--per-image-plot", str(alone / "best_t.csv"), "--labels", str(alone / "labels")])
    assert (alone / "sweep.json").read_bytes() == before["results/threshold_sweep.json"]
    assert (alone / "best_t.csv").read_bytes() == before["plots/per_image_best_t.csv"]
    assert {f"results/threshold_labels/{path.name}": path.read_bytes() for path in (alone / "labels").iterdir()} == {
        name: data for name, data in before.items() if name.startswith("results/threshold_labels/")}

    real_save, calls = bao.infer.pipeline.save_mask, []

    def failing_save(path, mask):
        calls.append(path)
        if len(calls) == 5:
            raise OSError(28, "No space left on device")
        real_save(path, mask)

    monkeypatch.setattr(bao.infer.pipeline, "save_mask", failing_save)
    with pytest.raises(OSError, match="No space left"):
        stages.pseudo_label.main(argv)
    assert _snapshot(tiny_repo, *outputs) == before
    assert _no_temp_left(tiny_repo / "results")


def _stage_outputs(repo: Path) -> dict:
    """What train_cam leaves for DVC: the model's tensors and every DVCLive file's bytes."""
    live = repo / "dvclive/train_cam"
    files = {str(path.relative_to(live)): path.read_bytes() for path in sorted(live.rglob("*")) if path.is_file()}
    return {"model": torch.load(repo / "models/cam.pt", weights_only=True)["model"], "live": files}


def test_train_cam_killed_mid_epoch_resumes_to_the_uninterrupted_result(tiny_repo, tmp_path, monkeypatch, caplog, one_thread):
    """Same seed on CPU: the resumed run's weights and DVCLive files equal an uninterrupted run's bit for bit.

    The killed run is a separate process (SIGKILL: no cleanup, no exception handler runs); the
    reference and the rerun run in this process to save two interpreter start-ups.
    """
    import os
    import signal
    import subprocess
    import sys
    import time

    import stages.train_cam
    from pipeline_utils import stage_argv

    repo = tiny_repo
    monkeypatch.chdir(repo)
    argv = stage_argv(repo, "train_cam")
    stages.train_cam.main(argv)  # the uninterrupted reference
    reference = _stage_outputs(repo)
    for path in ("models/cam.pt", "dvclive/train_cam"):  # what `dvc repro` deletes before a rerun
        subprocess.run(["rm", "-rf", path], cwd=repo, check=True)

    resume = repo / "checkpoints/train_cam" / RESUME_FILE
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}  # the arithmetic of this process
    with open(tmp_path / "killed.log", "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "stages.train_cam", *argv], cwd=repo, env=env, stdout=log, stderr=log)
        while process.poll() is None and not resume.exists():
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-3000:]
    killed_at = torch.load(resume, weights_only=True)
    assert not killed_at["epoch_finished"] and killed_at["epoch"] == 0, "the kill should land in the first epoch"
    assert not (repo / "models/cam.pt").exists() and not (repo / "dvclive/train_cam").exists()  # nothing partial

    with caplog.at_level("INFO", logger="bao"):
        stages.train_cam.main(argv)  # the rerun
    assert f"resumed from checkpoints/train_cam/{RESUME_FILE} at epoch 0, batch {killed_at['batches_done']}" in caplog.text
    assert not (repo / "checkpoints").exists()  # removed once the stage succeeded
    assert _no_temp_left(repo / "dvclive") and _no_temp_left(repo / "models")  # the killed run's temp files too
    resumed = _stage_outputs(repo)
    assert resumed["live"] == reference["live"]
    for name, tensor in reference["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name


def test_train_cam_with_inf_lr_fails_naming_the_key_or_the_step_and_saves_no_model(tiny_repo, monkeypatch, one_thread):
    """``lr: .inf`` used to save models/cam.pt with 61 of 121 tensors non-finite and exit 0. Now
    the params check names the key; and if an update still diverges (here the optimizer is given
    lr inf behind the check's back), the stage raises naming the step (an uncaught exception:
    exit status 1) before anything is saved."""
    import subprocess

    import bao.train.common
    import stages.train_cam
    from pipeline_utils import stage_argv

    monkeypatch.chdir(tiny_repo)
    argv = stage_argv(tiny_repo, "train_cam")
    for path in ("models/cam.pt", "dvclive/train_cam"):  # what `dvc repro` deletes before a rerun
        subprocess.run(["rm", "-rf", path], cwd=tiny_repo, check=True)
    params_file = tiny_repo / "params.yaml"
    original = params_file.read_text()
    raw = yaml.safe_load(original)
    raw["train_cam"]["lr"] = float("inf")
    params_file.write_text(yaml.safe_dump(raw))
    try:
        with pytest.raises(ParamsError, match=r"train_cam\.lr: Input should be a finite number \(got inf\)"):
            stages.train_cam.main(argv)
    finally:
        params_file.write_text(original)
    monkeypatch.setattr(bao.train.common, "create_optimizer", lambda parameters, *args, **kwargs: torch.optim.AdamW(parameters, lr=float("inf")))
    try:
        with pytest.raises(FloatingPointError, match=r"weights became non-finite in the optimizer step of step 1 \(epoch 1, batch 1/16\)"):
            stages.train_cam.main(argv)
    finally:
        shutil.rmtree(tiny_repo / "checkpoints", ignore_errors=True)
    assert not (tiny_repo / "models/cam.pt").exists() and not (tiny_repo / "dvclive/train_cam").exists()
