"""Two CPU processes on gloo, as ``torchrun --nproc_per_node 2`` would start them: disjoint shards,
synchronised gradients (same weights as one process on the global batch), summed metrics, one writer."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from bao.train.engine import create_optimizer, train_loop

NUM_ITEMS, PER_RANK_BATCH, WORLD, EPOCHS, SEED = 8, 2, 2, 2, 0


class TinyData(torch.utils.data.Dataset):
    def __init__(self):
        generator = torch.Generator().manual_seed(1)
        self.images = torch.randn(NUM_ITEMS, 3, 4, 4, generator=generator)
        self.targets = torch.randn(NUM_ITEMS, 2, generator=generator)

    def __len__(self):
        return NUM_ITEMS

    def __getitem__(self, index):
        return {"image": self.images[index], "target": self.targets[index], "index": index}


def tiny_model() -> nn.Module:
    torch.manual_seed(SEED)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


def train(model_to_call: nn.Module, model: nn.Module, loader, seen: list) -> list[dict]:
    optimizer = create_optimizer(model.parameters(), 1e-2, 1e-4)

    def step(batch, state):
        seen.append((state.epoch, batch["index"].tolist()))
        return {"loss_mse": nn.functional.mse_loss(model_to_call(batch["image"]), batch["target"])}

    return train_loop(step, model, loader, optimizer, scheduler=None, epochs=EPOCHS, device=torch.device("cpu")).history


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def become_rank(rank: int, port: int, world: int = WORLD) -> None:
    """In a spawned process: the environment ``torchrun`` would give rank ``rank``, one thread."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)


def _rank_main(rank: int, port: int, out_dir: str) -> None:
    become_rank(rank, port)
    from bao.distributed import init_distributed, is_main_process, shared_atomic_outputs
    from bao.metrics import ConfusionMatrix
    from bao.train.common import make_loader, prepare_model

    assert init_distributed("cpu")
    model = tiny_model()
    net = prepare_model(model, torch.device("cpu"))
    loader = make_loader(TinyData(), PER_RANK_BATCH, shuffle=True, num_workers=0, seed=SEED, drop_last=True, distributed=True)
    seen: list = []
    history = train(net, model, loader, seen)
    matrix = ConfusionMatrix(3)
    matrix.update(np.full((2, 2), rank, np.uint8), np.full((2, 2), rank + 1, np.uint8))
    matrix.all_reduce()
    with shared_atomic_outputs(os.path.join(out_dir, "shards")) as (staging,):
        staging.mkdir(exist_ok=True)
        (staging / f"rank{rank}.txt").write_text(str(rank))
    if is_main_process():
        Path(out_dir, "written_by_main_only.txt").write_text("0")
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    torch.save({"seen": seen, "history": history, "state": state, "matrix": torch.from_numpy(matrix.matrix)}, os.path.join(out_dir, f"rank{rank}.pt"))


class GlobalBatches:
    """One process reading what both ranks read together: DistributedSampler's permutation, in global batches."""

    def __init__(self, dataset):
        self.dataset, self.epoch = dataset, 0
        self.sampler = self

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return NUM_ITEMS // (PER_RANK_BATCH * WORLD)

    def __iter__(self):
        order = torch.randperm(NUM_ITEMS, generator=torch.Generator().manual_seed(SEED + self.epoch)).tolist()
        size = PER_RANK_BATCH * WORLD
        for start in range(0, NUM_ITEMS, size):
            yield torch.utils.data.default_collate([self.dataset[i] for i in order[start : start + size]])




@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("ddp")
    mp.start_processes(_rank_main, args=(free_port(), str(out_dir)), nprocs=WORLD, join=True, start_method="fork")
    return out_dir, [torch.load(out_dir / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def test_ranks_read_disjoint_shards_covering_the_data(two_ranks):
    _, results = two_ranks
    for epoch in range(EPOCHS):
        shards = [sorted(i for e, batch in result["seen"] if e == epoch for i in batch) for result in results]
        assert set(shards[0]).isdisjoint(shards[1])
        assert sorted(shards[0] + shards[1]) == list(range(NUM_ITEMS))
    epoch_orders = [[batch for e, batch in results[0]["seen"] if e == epoch] for epoch in range(EPOCHS)]
    assert epoch_orders[0] != epoch_orders[1]  # set_epoch reshuffles the shards


def test_gradients_are_synchronised_like_one_process_on_the_global_batch(two_ranks):
    _, results = two_ranks
    for name, tensor in results[0]["state"].items():
        assert torch.equal(tensor, results[1]["state"][name]), name
    reference = tiny_model()
    history = train(reference, reference, GlobalBatches(TinyData()), [])
    for name, tensor in reference.state_dict().items():
        torch.testing.assert_close(results[0]["state"][name], tensor, rtol=1e-5, atol=1e-6)
    # epoch losses are averaged over ranks: the same as the one-process epoch means
    for distributed_epoch, reference_epoch in zip(results[0]["history"], history):
        assert distributed_epoch["loss"] == pytest.approx(reference_epoch["loss"], rel=1e-5)
    assert results[0]["history"] == results[1]["history"]


def test_metrics_are_summed_and_only_rank0_writes(two_ranks):
    out_dir, results = two_ranks
    expected = np.zeros((3, 3), np.int64)
    expected[0, 1] = expected[1, 2] = 4
    for result in results:
        assert np.array_equal(result["matrix"].numpy(), expected)
    assert sorted(p.name for p in (out_dir / "shards").iterdir()) == ["rank0.txt", "rank1.txt"]
    assert [p.name for p in out_dir.glob("*.txt")] == ["written_by_main_only.txt"]
