"""The evaluate stage's scoring: shared across torchrun processes, null (never NaN) without usable masks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch.multiprocessing as mp

from bao import distributed
from bao.data.manifest import read_manifest
from bao.data.palette import read_mask, save_mask
from bao.data.prepare import prepare_dataset
from bao.infer import segment
from bao.infer.segment import evaluation_metrics, score_predictions
from bao.io import write_json
from dataset_fixtures import data_config, write_folder
from test_distributed import become_rank, free_port


@pytest.fixture
def manifest_with_predictions(tmp_path):
    """A folder dataset with masks, and predictions equal to them except one pixel per image."""
    prepare_dataset(data_config("folder", write_folder(tmp_path / "mine", count=8)), tmp_path / "out")
    manifest = read_manifest(tmp_path / "out")
    predictions = tmp_path / "pred"
    predictions.mkdir()
    for row in manifest.split("train").itertuples():
        mask = read_mask(manifest.resolve(row.mask_path))
        mask[0, 0] = 0 if mask[0, 0] != 0 else 1
        save_mask(predictions / f"{row.image_id}.png", np.where(mask == 255, 0, mask))
    return manifest, predictions


def test_each_process_scores_its_share_and_the_counts_are_summed(manifest_with_predictions, monkeypatch):
    manifest, predictions = manifest_with_predictions
    expected = score_predictions(manifest, "train", predictions)
    seen, reduced = {}, []
    real_evaluate_pairs = segment.evaluate_pairs

    def recording_evaluate_pairs(pairs, num_classes, workers=None):
        seen[distributed.get_rank()] = [gt.name for gt, _ in pairs]
        return real_evaluate_pairs(pairs, num_classes, workers)

    monkeypatch.setattr(segment, "evaluate_pairs", recording_evaluate_pairs)
    monkeypatch.setattr("bao.metrics.ConfusionMatrix.all_reduce", lambda self: reduced.append(self.matrix.copy()))
    monkeypatch.setattr(distributed, "get_world_size", lambda: 2)
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "get_rank", lambda rank=rank: rank)
        score_predictions(manifest, "train", predictions)
    everything = sorted(row.image_id for row in manifest.split("train").itertuples())
    assert set(seen[0]).isdisjoint(seen[1]) and sorted(n.removesuffix(".png") for n in seen[0] + seen[1]) == everything
    assert len(reduced) == 2  # every process joins the sum, none waits on another that scores alone
    total = reduced[0] + reduced[1]
    tp, union = np.diag(total), total.sum(0) + total.sum(1) - np.diag(total)
    assert expected["miou"] == pytest.approx(np.mean(tp[union > 0] / union[union > 0]))


def test_masks_that_ignore_every_pixel_give_null_not_nan(manifest_with_predictions, tmp_path):
    manifest, predictions = manifest_with_predictions
    for row in manifest.split("train").itertuples():
        path = manifest.resolve(row.mask_path)
        save_mask(path, np.full_like(read_mask(path), 255))
    assert score_predictions(manifest, "train", predictions) is None
    metrics = evaluation_metrics(None, None)
    json.dumps(metrics, allow_nan=False)


def test_metrics_files_refuse_nan_naming_the_key(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(path, {"miou": 0.5})
    with pytest.raises(ValueError, match=r"metrics.json: refusing to write non-finite numbers at per_class\.cat, curve\[1\]"):
        write_json(path, {"miou": 0.4, "per_class": {"cat": float("nan")}, "curve": [0.1, float("inf")]})
    assert json.loads(path.read_text()) == {"miou": 0.5}


def _score_on_rank(rank: int, port: int, prepared: str, predictions: str, out_dir: str) -> None:
    become_rank(rank, port, world=2)
    from bao.distributed import init_distributed

    assert init_distributed("cpu", timeout_s=120)
    result = score_predictions(read_manifest(prepared), "train", Path(predictions), workers=1)
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))


def test_two_gloo_processes_score_what_one_process_scores(manifest_with_predictions, tmp_path):
    """As ``torchrun --nproc_per_node 2`` runs the evaluate stage: both processes end with the
    one-process metrics."""
    manifest, predictions = manifest_with_predictions
    mp.spawn(_score_on_rank, args=(free_port(), str(manifest.root), str(predictions), str(tmp_path)), nprocs=2, join=True)
    alone = json.loads(json.dumps(score_predictions(manifest, "train", predictions)))
    assert json.loads((tmp_path / "rank0.json").read_text()) == json.loads((tmp_path / "rank1.json").read_text()) == alone
