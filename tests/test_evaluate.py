import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bao.data.palette import save_mask
from bao.evaluate import evaluate_pairs, load_pair, main, pairs_from_dirs
from bao.metrics import confusion_counts
from benchmarks.loop_evaluator import loop_evaluator_iou
from benchmarks.masks import blob_mask, predicted_mask

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def mask_dirs(tmp_path):
    rng = np.random.default_rng(1)
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    for index in range(6):
        gt = blob_mask(rng, 60, 80, 5)
        save_mask(gt_dir / f"{index}.png", gt)
        save_mask(pred_dir / f"{index}.png", predicted_mask(rng, gt, 5))
    return gt_dir, pred_dir


def test_counts_equal_a_plain_bincount_for_blobby_and_noisy_masks():
    rng = np.random.default_rng(0)
    blobby = blob_mask(rng, 90, 120, 7)
    noisy = rng.integers(0, 7, (90, 120)).astype(np.uint8)
    noisy[:4] = 255
    for gt in (blobby, noisy):
        pred = predicted_mask(rng, gt, 7)
        valid = gt != 255
        expected = np.bincount(gt[valid].astype(int) * 7 + pred[valid], minlength=49).reshape(7, 7)
        assert np.array_equal(confusion_counts(gt, pred, 7), expected)


def test_prediction_255_on_an_ignored_pixel_is_fine_elsewhere_an_error():
    gt = np.array([[0, 255]], np.uint8)
    assert confusion_counts(gt, np.array([[1, 255]], np.uint8), 2).tolist() == [[0, 1], [0, 0]]
    with pytest.raises(ValueError, match=r"prediction has \[255\]"):
        confusion_counts(gt, np.array([[255, 0]], np.uint8), 2)


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_evaluator_matches_the_per_class_loop(mask_dirs, pool):
    gt_dir, pred_dir = mask_dirs
    pairs = pairs_from_dirs(pred_dir, gt_dir, None)
    matrix = evaluate_pairs(pairs, 5, workers=2, pool=pool)
    assert np.array_equal(matrix.iou(), loop_evaluator_iou(pairs, 5), equal_nan=True)


def test_cli_writes_metrics_for_listed_ids(mask_dirs, tmp_path):
    gt_dir, pred_dir = mask_dirs
    ids = tmp_path / "ids.txt"
    ids.write_text("0\n3\n")
    out = tmp_path / "metrics.json"
    main(["--pred", str(pred_dir), "--gt", str(gt_dir), "--num-classes", "5", "--ids", str(ids), "--out", str(out)])
    # the reference is the independent per-class loop, over the listed ids only
    expected = loop_evaluator_iou(pairs_from_dirs(pred_dir, gt_dir, ["0", "3"]), 5)
    written = json.loads(out.read_text())
    assert written["miou"] == pytest.approx(float(np.nanmean(expected)), abs=1e-12)
    assert [written["per_class_iou"][str(k)] for k in range(5)] == [None if np.isnan(v) else pytest.approx(v, abs=1e-12) for v in expected]
    everything = loop_evaluator_iou(pairs_from_dirs(pred_dir, gt_dir, None), 5)
    assert written["miou"] != pytest.approx(float(np.nanmean(everything)))  # the ids file mattered


def test_cli_missing_or_mismatched_prediction_is_a_clear_error(mask_dirs, tmp_path, capsys):
    gt_dir, pred_dir = mask_dirs
    out = tmp_path / "metrics.json"
    args = ["--pred", str(pred_dir), "--gt", str(gt_dir), "--num-classes", "5", "--out", str(out)]
    (pred_dir / "2.png").unlink()
    with pytest.raises(SystemExit):
        main(args)
    assert f"{pred_dir / '2.png'}" in capsys.readouterr().err
    save_mask(pred_dir / "2.png", np.zeros((60, 81), np.uint8))
    with pytest.raises(SystemExit):
        main(args)
    message = capsys.readouterr().err
    assert f"{pred_dir / '2.png'}" in message and "81x60" in message
    save_mask(pred_dir / "2.png", np.full((60, 80), 7, np.uint8))
    with pytest.raises(SystemExit):
        main(args)
    message = capsys.readouterr().err
    assert f"{pred_dir / '2.png'}" in message and "prediction has [7]" in message
    assert not out.exists()


def test_cli_runs_without_importing_torch(mask_dirs, tmp_path):
    """`python -m bao.evaluate` starts in a fraction of a second because torch is never imported."""
    gt_dir, pred_dir = mask_dirs
    out = tmp_path / "metrics.json"
    wrapper = (
        "import runpy, sys\n"
        f"sys.argv = ['bao.evaluate', '--pred', {str(pred_dir)!r}, '--gt', {str(gt_dir)!r}, '--num-classes', '5', '--out', {str(out)!r}]\n"
        "runpy.run_module('bao.evaluate', run_name='__main__', alter_sys=True)\n"
        "loaded = sorted(name for name in sys.modules if name == 'torch' or name.startswith('torch.'))\n"
        "assert not loaded, f'bao.evaluate imported {loaded[:5]}'\n"
    )
    result = subprocess.run([sys.executable, "-c", wrapper], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    expected = loop_evaluator_iou(pairs_from_dirs(pred_dir, gt_dir, None), 5)
    assert json.loads(out.read_text())["miou"] == pytest.approx(float(np.nanmean(expected)), abs=1e-12)


@pytest.mark.parametrize("height, width", [(61, 80), (60, 79), (80, 60)], ids=["height-only", "width-only", "transposed"])
def test_prediction_of_another_height_or_width_is_refused(tmp_path, height, width):
    """Each dimension on its own (the CLI test changes only the width)."""
    gt, pred = tmp_path / "gt.png", tmp_path / "pred.png"
    save_mask(gt, np.zeros((60, 80), np.uint8))
    save_mask(pred, np.zeros((height, width), np.uint8))
    with pytest.raises(ValueError, match=f"{pred}: prediction size {width}x{height} differs from ground truth {gt} 80x60"):
        load_pair((gt, pred))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork is chosen on Linux only")
def test_cli_workers_are_forked_only_from_a_process_without_threads_or_torch():
    """Forking is what makes processes cheap for the CLI; from a threaded process it could deadlock."""
    script = (
        "import multiprocessing, threading, time\n"
        "from bao.evaluate import CLI_POOL, make_pool\n"
        "assert CLI_POOL == 'process'\n"
        "multiprocessing.set_start_method('spawn')  # so that the platform's choice differs from fork\n"
        "with make_pool('process', 2) as pool: print(pool._mp_context.get_start_method())\n"
        "threading.Thread(target=time.sleep, args=(2,), daemon=True).start()\n"
        "with make_pool('process', 2) as pool: print(pool._mp_context.get_start_method())\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["fork", "spawn"]
