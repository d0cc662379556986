"""MFU arithmetic and FLOP counting against hand counts (benchmarks/flops.py)."""

import math

import pytest
import torch
from torch import nn

from benchmarks.flops import datasheet_bf16_peak, measured_matmul_peak, mfu, training_step_flops, utilisation


def test_linear_training_flops_match_a_hand_count():
    layer = nn.Linear(8, 4)
    inputs = torch.randn(3, 8, requires_grad=True)
    # forward (3x8)@(8x4): 2*3*8*4 = 192; backward: grad of the input and of the weight, 192 each
    assert training_step_flops(lambda: layer(inputs).sum()) == 3 * 192


def test_first_layer_backward_skips_the_input_gradient():
    layer = nn.Linear(8, 4)
    inputs = torch.randn(3, 8)  # images: no gradient wanted, so only the weight gradient is computed
    assert training_step_flops(lambda: layer(inputs).sum()) == 2 * 192


def test_conv_training_flops_match_a_hand_count():
    conv = nn.Conv2d(3, 5, kernel_size=3, padding=1, bias=False)
    images = torch.randn(2, 3, 6, 7)
    hidden = nn.Conv2d(5, 4, kernel_size=1, bias=False)
    # conv: 2 * N * Cout * H * W * Cin * k * k multiply-adds per pass
    first = 2 * 2 * 5 * 6 * 7 * 3 * 3 * 3
    second = 2 * 2 * 4 * 6 * 7 * 5
    # forward both; backward: the second layer's input and weight gradients, the first layer's weight gradient only
    expected = first + second + 2 * second + first
    assert training_step_flops(lambda: hidden(conv(images)).sum()) == expected


def test_mfu_arithmetic():
    # 1 GFLOP per step at 50 steps/s is 50 GFLOP/s; over a 100 GFLOP/s peak that is half
    assert mfu(1e9, 50.0, 100e9) == pytest.approx(0.5)
    assert mfu(1e9, 50.0, None) is None
    figures = utilisation(2e9, 10.0, {"datasheet_bf16": 989e12, "measured_matmul": 40e9, "unknown": None})
    assert figures["achieved_tflops_per_s"] == 0.02
    assert figures["mfu_vs_measured_matmul"] == 0.5
    assert figures["mfu_vs_datasheet_bf16"] == pytest.approx(2e10 / 989e12, abs=1e-5)
    assert figures["mfu_vs_unknown"] is None


def test_datasheet_peaks_by_name_and_none_when_unknown():
    assert datasheet_bf16_peak("NVIDIA H200") == 989e12
    assert datasheet_bf16_peak("NVIDIA H100 80GB HBM3") == 989e12
    assert datasheet_bf16_peak("NVIDIA H100 PCIe") == 756e12
    assert datasheet_bf16_peak("NVIDIA GeForce RTX 4090") is None
    assert datasheet_bf16_peak(None) is None


def test_measured_matmul_peak_on_cpu_is_fp32_and_positive():
    measured = measured_matmul_peak(torch.device("cpu"), size=64, repeats=1)
    assert measured["dtype"] == "float32" and measured["size"] == 64
    assert math.isfinite(measured["flops_per_s"]) and measured["flops_per_s"] > 0
