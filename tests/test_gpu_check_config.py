"""The GPU check's settings are only ever used on a lent GPU, where device time is scarce: a
renamed params key or runtime knob must fail here, on the CPU, instead."""

from __future__ import annotations

import copy

import pytest
import yaml

from bao.config import load_params, load_runtime
from benchmarks import gpu_check
from pipeline_utils import REPO, deep_update


@pytest.mark.parametrize("name", ["GPU_OVERRIDES", "CPU_OVERRIDES", "TINY_OVERRIDES"])
def test_each_override_set_gives_valid_params(tmp_path, name):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(deep_update(copy.deepcopy(raw), getattr(gpu_check, name))))
    params = load_params(path)
    overrides = getattr(gpu_check, name)
    assert params.device == overrides["device"]
    assert params.data.synthetic.num_train == overrides["data"]["synthetic"]["num_train"]
    assert list(params.pseudo_label.scales) == overrides["pseudo_label"]["scales"]


def test_gpu_runtime_is_a_valid_runtime_yaml(tmp_path):
    path = tmp_path / "runtime.yaml"
    path.write_text(gpu_check.GPU_RUNTIME)
    runtime = load_runtime(path, environ={}, must_exist=True)
    assert (runtime.loader_workers, runtime.inference_batch_size, runtime.io_threads) == (4, 8, 4)



@pytest.mark.parametrize("mode", ["gpu", "cpu", "tiny"])
def test_each_modes_benchmark_options_parse(mode):
    """A renamed or removed benchmark flag fails here, not on the GPU (argparse exits on an unknown one)."""
    from benchmarks import evaluator, pseudo_label, train_step

    for module, options in zip((train_step, pseudo_label, evaluator), gpu_check.BENCHMARK_OPTIONS[mode]):
        args = module.build_parser().parse_args([*options, "--out", "figures.json"])
        assert str(args.out) == "figures.json", module.__name__
