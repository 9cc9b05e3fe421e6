"""Running test workers in fresh processes, with a deadline so that a hung worker fails the test, not CI."""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable

import pytest
import torch.multiprocessing as mp


def run_workers(worker: Callable[..., None], args: tuple, nprocs: int = 2, timeout_s: float = 300) -> None:
    """``worker(rank, *args)`` in ``nprocs`` spawned processes; fails the test if one raises or the deadline passes.

    Spawned, not forked: a process forked from a pytest that already ran threaded torch code can deadlock on a
    lock that another thread held at the fork. ``worker`` must be a module-level function (spawn imports it).
    """
    workers = mp.start_processes(worker, args=args, nprocs=nprocs, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout_s
    while not workers.join(timeout=1):
        if time.monotonic() > deadline:
            for process in workers.processes:
                process.kill()
            pytest.fail(f"{nprocs} workers of {worker.__name__} did not finish within {timeout_s} s")


GLOO_TIMEOUT = datetime.timedelta(seconds=120)  # a collective that waits longer fails the worker, not CI


def leave_group() -> None:
    """Wait for every rank, then destroy the process group: a rank that leaves while another still talks to it
    makes gloo abort the other (SIGABRT) or leaves it hanging in its own shutdown."""
    import torch.distributed as dist

    if dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()
