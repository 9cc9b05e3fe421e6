"""The process group as the training loops see it: this process's rank, the world size, sums over processes.

Without an initialised ``torch.distributed`` process group there is one process, of rank 0, and a sum over
processes is the value itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """Whether a ``torch.distributed`` process group is up."""
    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes; (0, 1) outside a process group."""
    if is_distributed():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over processes, in place (on every process); returns it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_sums(values: Sequence[float], device: torch.device) -> list[float]:
    """Each of ``values`` summed over processes, in float64 on ``device`` (the process group's device)."""
    return all_reduce_sum(torch.tensor(list(values), dtype=torch.float64, device=device)).tolist()
