"""What every benchmark prints next to its figures: the machine and the load it ran under."""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

# The CPU features that decide whether bf16 autocast can beat fp32 on a CPU.
MATMUL_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def load_average() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


LOAD_AT_START = load_average()  # when a benchmark imports this module, i.e. before it measures


def cpu_model_and_flags() -> tuple[str, list[str]]:
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return cpu, [flag for flag in MATMUL_FLAGS if flag in flags]


def machine_description() -> dict:
    import torch  # here: the evaluator benchmark, like the evaluator, runs without torch

    cpu, flags = cpu_model_and_flags()
    description = {
        "cpu": cpu,
        "cpu_flags": flags,
        "cpu_count": os.cpu_count(),
        "load_average_1min_start": LOAD_AT_START,  # the README rows quote "start -> end"
        "load_average_1min": load_average(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        description["gpu"] = torch.cuda.get_device_name(0)
    return description


def report(figures: dict, out: Path | None) -> None:
    """Print the figures as JSON, and also write them to ``out`` when given."""
    text = json.dumps(figures, indent=2)
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")


def add_run_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options every torch benchmark takes: its CPU threads and where its JSON goes too."""
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", type=Path)
    return parser


def parse_run_arguments(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse, and give torch the ``--threads`` asked for before anything is timed."""
    import torch  # here: the evaluator benchmark runs without torch

    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    return args
