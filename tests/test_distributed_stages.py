"""Stages under torchrun, with 2 gloo CPU processes: prepare on rank 0 only, each rank's own
augmentation seed (seed + rank) kept across a resume, and a failing rank that aborts the group."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp
from torch import nn

from test_distributed import PER_RANK_BATCH, SEED, WORLD, TinyData, become_rank, free_port, tiny_model

REPO = Path(__file__).resolve().parents[1]


def _draws(model, loader, epochs: int, checkpoint) -> list[list[float]]:
    """Train ``epochs`` (resuming from ``checkpoint`` if it holds one); the random numbers each
    step drew from the global torch RNG (as random crops and flips do), one list per epoch."""
    from bao.train.engine import create_optimizer, train_loop

    draws: dict[int, list[float]] = {}

    def step(batch, state):
        draws.setdefault(state.epoch, []).append(round(torch.rand(()).item(), 8))
        return {"loss_mse": nn.functional.mse_loss(model(batch["image"]), batch["target"])}

    optimizer = create_optimizer(model.parameters(), 1e-2, 0)
    train_loop(step, model, loader, optimizer, scheduler=None, epochs=epochs, device=torch.device("cpu"), checkpoint=checkpoint)
    return [draws[epoch] for epoch in sorted(draws)]


def _rank_main(rank: int, port: int, out_dir: str) -> None:
    become_rank(rank, port)
    from bao.runtime import seed_everything
    from bao.stage import start_stage
    from bao.train.checkpoint import CheckpointHook
    from bao.train.common import make_loader, prepare_model

    params, _, _ = start_stage("test", REPO / "params.yaml", None)
    first_draw = torch.rand(()).item()

    def run(epochs: int, resume_dir: str | None, seed: int):
        model = tiny_model()  # seeds torch with SEED: the same initial weights on every rank
        net = prepare_model(model, torch.device("cpu"))
        seed_everything(seed)  # as start_stage does
        loader = make_loader(TinyData(), PER_RANK_BATCH, shuffle=True, num_workers=0, seed=SEED, drop_last=True, distributed=True)
        hook = CheckpointHook(resume_dir, "fingerprint", 0) if resume_dir else None
        return _draws(net, loader, epochs, hook)

    uninterrupted = run(2, None, params.seed + rank)
    resume_dir = os.path.join(out_dir, "resume")
    first_epoch = run(1, resume_dir, params.seed + rank)  # "killed" after epoch 0: its checkpoint is on disk
    resumed = run(2, resume_dir, 1000)  # the rerun's RNG is anywhere; the checkpoint must restore this rank's
    torch.save({"first_draw": first_draw, "uninterrupted": uninterrupted, "first_epoch": first_epoch, "resumed": resumed},
               os.path.join(out_dir, f"rank{rank}.pt"))


def test_ranks_augment_with_seed_plus_rank_and_resume_restores_each_ranks_rng(tmp_path):
    mp.start_processes(_rank_main, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True, start_method="fork")
    results = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD)]
    torch.manual_seed(0)  # params.yaml's seed; rank 0 draws exactly what one process seeded with it draws
    assert results[0]["first_draw"] == torch.rand(()).item()
    assert results[0]["first_draw"] != results[1]["first_draw"]
    assert results[0]["uninterrupted"] != results[1]["uninterrupted"]  # each rank its own augmentations
    saved = torch.load(tmp_path / "resume/resume.pt", weights_only=True)
    assert len(saved["ranks"]) == WORLD
    assert not torch.equal(saved["ranks"][0]["rng"]["torch"], saved["ranks"][1]["rng"]["torch"])
    for result in results:
        assert result["first_epoch"] == result["uninterrupted"][:1]
        assert result["resumed"] == result["uninterrupted"][1:]  # epoch 1 after the resume: this rank's own draws


def test_prepare_runs_on_rank_zero_only(tmp_path, monkeypatch):
    import stages.prepare

    calls = []
    real_prepare = stages.prepare.prepare_dataset
    monkeypatch.setattr(stages.prepare, "prepare_dataset", lambda *a, **kw: calls.append(a) or real_prepare(*a, **kw))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "2")
    arguments = ["--params", str(REPO / "params.yaml"), "--out", "prepared", "--metrics", "prepare.json"]
    monkeypatch.setenv("RANK", "1")
    stages.prepare.main(arguments)
    assert calls == [] and list(tmp_path.iterdir()) == []  # rank 1 neither joined a group nor wrote anything
    monkeypatch.setenv("RANK", "0")  # the control: rank 0 of the same launch prepares, without a group
    stages.prepare.main(arguments)
    assert len(calls) == 1 and (tmp_path / "prepared" / "manifest.parquet").is_file() and (tmp_path / "prepare.json").is_file()


RANK_SCRIPT = textwrap.dedent("""
    import sys, threading, time
    from bao.distributed import barrier, init_distributed
    rank, mode = int(sys.argv[1]), sys.argv[2]
    init_distributed("cpu", timeout_s=int(sys.argv[3]))
    if rank == 1:
        # a thread that does not end (a stuck worker, a pool): it keeps a normally exiting process alive
        threading.Thread(target=time.sleep, args=(120,)).start()
        if mode == "raise":
            raise RuntimeError("boom on rank 1")
        time.sleep(120)  # mode "stuck": alive, never reaches the barrier
    barrier()
""")


def _two_ranks(mode: str, timeout_s: int) -> tuple[list[subprocess.CompletedProcess], list[float]]:
    """Both processes' results and the seconds each took to exit (a process still alive after
    60 s, or rank 1 once rank 0 has exited in mode "stuck", is killed: return code -9)."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}
    started = time.monotonic()
    processes = [subprocess.Popen([sys.executable, "-c", RANK_SCRIPT, str(rank), mode, str(timeout_s)],
                                  env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in range(2)]
    results, seconds = [], []
    for rank, process in enumerate(processes):
        try:
            stdout, stderr = process.communicate(timeout=1 if (mode == "stuck" and rank == 1) else 60)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        seconds.append(time.monotonic() - started)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    return results, seconds


def test_an_exception_on_one_rank_aborts_the_group_at_once():
    (rank0, rank1), seconds = _two_ranks("raise", timeout_s=600)
    assert rank1.returncode == 1 and "boom on rank 1" in rank1.stderr and "aborting the process group" in rank1.stderr
    assert rank0.returncode not in (0, None, -9), rank0.stderr[-2000:]  # its barrier failed, it was not killed by the test
    assert max(seconds) < 45  # not the barrier timeout (600 s), not the stuck thread's 120 s


def test_a_stuck_rank_fails_the_others_after_the_timeout():
    (rank0, _), seconds = _two_ranks("stuck", timeout_s=5)
    assert rank0.returncode not in (0, None, -9), rank0.stderr[-2000:]
    assert seconds[0] < 45  # runtime.dist_timeout_s, not 30 minutes
