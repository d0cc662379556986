"""What every stage script does first: read params, pick the device, seed, open DVCLive."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from bao.config import Params, load_params
from bao.runtime import resolve_device, seed_everything

log = logging.getLogger("bao")


def start_stage(name: str, params_file: str = "params.yaml") -> tuple[Params, torch.device]:
    logging.basicConfig(level=logging.INFO, format=f"[{name}] %(message)s")
    params = load_params(params_file)
    device = resolve_device(params.device)
    seed_everything(params.seed)
    log.info("device=%s seed=%d", device, params.seed)
    return params, device


def open_live(directory: str | Path):
    """A DVCLive logger that leaves dvc.yaml alone (plots are declared there by hand)."""
    from dvclive import Live

    return Live(str(directory), save_dvc_exp=False, dvcyaml=False)
