"""Runtime options (runtime.yaml, BAO_RUNTIME_*): the training loop's channels_last, throughput figures, loader settings."""

from pathlib import Path

import pytest
import torch
from torch import nn

from bao.config import ParamsError, RuntimeConfig, load_runtime
from bao.train.common import make_loader, prepare_model
from bao.train.engine import create_optimizer, to_device, train_loop


def _batches(count=3):
    generator = torch.Generator().manual_seed(0)
    return [{"image": torch.randn(2, 3, 8, 8, generator=generator), "target": torch.randn(2, 2, generator=generator)} for _ in range(count)]


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


def _train(channels_last: bool):
    model = _model()
    net = prepare_model(model, torch.device("cpu"), RuntimeConfig(channels_last=channels_last))
    layouts = []

    def step(batch, state):
        layouts.append(batch["image"].is_contiguous(memory_format=torch.channels_last))
        return {"loss": nn.functional.mse_loss(net(batch["image"]), batch["target"])}

    state = train_loop(step, model, _batches(), create_optimizer(model.parameters(), 1e-2, 0.0), None, 2, torch.device("cpu"), channels_last=channels_last)
    return model, state, layouts


def test_channels_last_changes_layout_not_results():
    plain, plain_state, plain_layouts = _train(False)
    nhwc, nhwc_state, nhwc_layouts = _train(True)
    assert not any(plain_layouts) and all(nhwc_layouts)
    assert nhwc[0].weight.is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(plain.parameters(), nhwc.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert abs(plain_state.history[-1]["loss"] - nhwc_state.history[-1]["loss"]) < 1e-5


def test_loop_reports_throughput_and_data_wait_per_epoch():
    _, state, _ = _train(False)
    assert len(state.throughput) == 2
    for epoch in state.throughput:
        assert epoch["images_per_s"] > 0 and 0.0 <= epoch["data_wait_fraction"] <= 1.0


def test_to_device_only_reformats_float_images():
    batch = to_device({"image": torch.randn(2, 3, 4, 4), "mask": torch.zeros(2, 4, 4, dtype=torch.long), "index": [0, 1]}, torch.device("cpu"), True)
    assert batch["image"].is_contiguous(memory_format=torch.channels_last)
    assert batch["mask"].is_contiguous() and batch["index"] == [0, 1]


def test_loader_takes_prefetch_and_pinning_from_runtime_settings():
    runtime = load_runtime(None, environ={})
    assert runtime.prefetch_factor >= 1 and runtime.inference_batch_size >= 1
    dataset = torch.utils.data.TensorDataset(torch.arange(10))
    loader = make_loader(dataset, 4, False, 1, 0, runtime=RuntimeConfig(prefetch_factor=3, pin_memory=True))
    assert loader.prefetch_factor == 3
    assert loader.pin_memory == torch.cuda.is_available()
    assert make_loader(dataset, 4, False, 0, 0).prefetch_factor is None


def test_compiled_model_trains_like_the_eager_one():
    eager = _model()
    compiled_weights = _model()
    net = prepare_model(compiled_weights, torch.device("cpu"), RuntimeConfig(compile=True))
    assert net is not compiled_weights  # the loop calls the compiled wrapper, checkpoints keep the module
    batches = _batches(2)
    for model, forward in ((eager, eager), (compiled_weights, net)):
        optimizer = create_optimizer(model.parameters(), 1e-2, 0.0)
        for batch in batches:
            loss = nn.functional.mse_loss(forward(batch["image"]), batch["target"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    for a, b in zip(eager.parameters(), compiled_weights.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_runtime_settings_come_from_the_file_then_the_environment(tmp_path):
    path = tmp_path / "runtime.yaml"
    path.write_text("loader_workers: 3\ncrf_workers: 0\n")
    runtime = load_runtime(path, environ={"BAO_RUNTIME_LOADER_WORKERS": "5", "BAO_RUNTIME_AMP": "false", "OTHER": "x"})
    assert (runtime.loader_workers, runtime.crf_workers, runtime.amp) == (5, 0, False)
    assert load_runtime(tmp_path / "absent.yaml", environ={}) == RuntimeConfig()  # optional by default


@pytest.mark.parametrize("text, environ, expected", [
    ("loader_workers: -1\n", {}, "runtime.yaml: invalid runtime settings\n  runtime.loader_workers: Input should be greater than or equal to 0 (got -1)"),
    ("num_workrs: 2\n", {}, "runtime.num_workrs: Extra inputs are not permitted"),
    ("", {"BAO_RUNTIME_INFERENCE_BATCH_SIZE": "0"}, "BAO_RUNTIME_INFERENCE_BATCH_SIZE: invalid runtime settings\n  runtime.inference_batch_size: Input should be greater than or equal to 1"),
])
def test_bad_runtime_setting_is_named_by_its_key_and_source(tmp_path, text, environ, expected):
    path = tmp_path / "runtime.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError) as error:
        load_runtime(path, environ=environ)
    assert expected in str(error.value).replace(str(tmp_path) + "/", "")


def test_a_runtime_file_named_explicitly_must_exist(tmp_path):
    with pytest.raises(ParamsError, match="absent.yaml: file not found"):
        load_runtime(tmp_path / "absent.yaml", environ={}, must_exist=True)


def test_the_documented_example_is_valid_and_holds_every_setting():
    import yaml

    example = yaml.safe_load((Path(__file__).resolve().parents[1] / "runtime.example.yaml").read_text())
    assert set(example) == set(RuntimeConfig.model_fields)
    assert RuntimeConfig.model_validate(example) == RuntimeConfig()  # the example shows the defaults
