"""Trained BAO weights into our ``BaoNet``: the official release's layout, or this project's own.

The official BAO network (i2mond/BAO, ``network/conformer.py``) is one Conformer module whose state
dict holds the backbone under the names our ``Conformer`` uses, the TransCAM heads
(``conv_cls_head`` (K+1, D, 3, 3), ``trans_cls_head`` (K+1, E)) and the BAO head: ``label_enc``
(Linear K -> D) and ``classifier_x`` (Conv2d D -> K+1, 3x3). Here those live in
``cam_net.backbone.*``, ``label_encoder.*`` and ``am_head.*``. The mapping is strict: every tensor
of our network must come from the file with its shape, and the file may hold nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from bao.io import CheckpointError
from bao.models.backbones import load_state_strict, read_state_dict
from bao.models.cam import BaoNet, TransCamNet

# official prefix -> ours; every other official key belongs to the Conformer backbone
OFFICIAL_HEAD_PREFIXES = {"label_enc.": "label_encoder.", "classifier_x.": "am_head."}
BACKBONE_PREFIX = "cam_net.backbone."


def is_official_layout(state: Mapping[str, torch.Tensor]) -> bool:
    return any(key.startswith(tuple(OFFICIAL_HEAD_PREFIXES)) for key in state)


def official_to_ours(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an official BAO state dict's keys to ``BaoNet``'s."""
    renamed = {}
    for key, value in state.items():
        prefix = next((p for p in OFFICIAL_HEAD_PREFIXES if key.startswith(p)), None)
        renamed[OFFICIAL_HEAD_PREFIXES[prefix] + key[len(prefix):] if prefix else BACKBONE_PREFIX + key] = value
    return renamed


def load_bao_weights(net: BaoNet, path: str | Path) -> str:
    """Load ``bao.checkpoint`` into ``net``; returns which layout it was (``official`` or ``ours``).

    Our own files are ``models/bao.pt`` (``{"model": state}``); anything with ``label_enc.*`` or
    ``classifier_x.*`` keys is the official layout, which only a Conformer BAO network can take.
    BatchNorm step counters absent from the file keep the network's values (they are not weights)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: BAO checkpoint (bao.checkpoint) not found")
    state = read_state_dict(path)
    if is_official_layout(state):
        if not isinstance(net.cam_net, TransCamNet):
            raise CheckpointError(
                f"{path}: an official BAO checkpoint (Conformer network) needs model.backbone: conformer_*; "
                f"this BAO network is built on {type(net.cam_net.backbone).__name__}"
            )
        if net.label_encoder is None:
            raise CheckpointError(f"{path}: the official BAO network has a label encoder; set bao.label_encoder: true")
        layout, state = "official", official_to_ours(state)
    else:
        layout = "ours"
    own = net.state_dict()
    state = {**{key: own[key] for key in own if key.endswith("num_batches_tracked") and key not in state}, **state}
    load_state_strict(net, state, path)
    return layout
