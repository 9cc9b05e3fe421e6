"""Rank, world size and sums over processes, alone and in a two-process gloo group."""

import json

import torch
import torch.distributed as dist

from mambaseg.training.distributed import all_reduce_sum, all_reduce_sums, is_distributed, rank_and_world
from tests.processes import GLOO_TIMEOUT, leave_group, run_workers


def test_one_process_without_a_group():
    assert not is_distributed() and rank_and_world() == (0, 1)
    t = torch.tensor([1.5, 2.0])
    assert all_reduce_sum(t) is t and t.tolist() == [1.5, 2.0]
    assert all_reduce_sums([0.1, 3], torch.device("cpu")) == [0.1, 3.0]


def _worker(rank: int, store: str, result: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2, timeout=GLOO_TIMEOUT)
    try:
        counts = all_reduce_sum(torch.tensor([rank + 1, 10 * rank], dtype=torch.float64))
        sums = all_reduce_sums([0.1 * (rank + 1), 1e-9], torch.device("cpu"))
        with open(f"{result}.{rank}", "w") as handle:
            json.dump({"rank_world": rank_and_world(), "counts": counts.tolist(), "sums": sums}, handle)
    finally:
        leave_group()


def test_two_processes_sum_on_every_rank(tmp_path):
    result = str(tmp_path / "result")
    run_workers(_worker, (str(tmp_path / "store"), result))
    for rank in range(2):
        with open(f"{result}.{rank}") as handle:
            got = json.load(handle)
        assert got["rank_world"] == [rank, 2]
        assert got["counts"] == [3.0, 10.0]
        assert got["sums"][0] == 0.1 + 0.2 and got["sums"][1] == 2e-9  # summed in float64
