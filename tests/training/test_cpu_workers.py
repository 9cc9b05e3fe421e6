"""Batch-building workers and torch threads on the CPU never ask for more than the machine's cores."""

import pytest

from mambaseg.training.run import cpu_workers_and_threads


@pytest.mark.parametrize(
    ("workers", "threads", "cores", "expected"),
    [
        (1, 2, 2, (0, 2)),  # 2 cores: batches in the training process (measured fastest there)
        (4, 2, 2, (0, 2)),
        (1, 1, 2, (1, 1)),  # fits: left alone
        (0, 2, 2, (0, 2)),
        (1, 4, 4, (1, 3)),  # a core for the worker
        (8, 16, 16, (4, 12)),  # at most a quarter of the cores to workers
        (1, 16, 16, (1, 15)),
        (2, 3, 3, (0, 3)),
    ],
)
def test_workers_and_threads_fit_the_cores(workers, threads, cores, expected):
    chosen = cpu_workers_and_threads(workers, threads, cores)
    assert chosen == expected
    assert chosen[0] == 0 or sum(chosen) <= cores


@pytest.mark.slow
def test_train_on_two_cores_builds_batches_in_process_and_says_so(tmp_path, monkeypatch, caplog):
    import torch

    from mambaseg.cli.main import main
    from tests.data.synthetic import write_nnunet_dataset

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        dataset = write_nnunet_dataset(tmp_path / "Dataset001_Tiny", n_cases=5, shape=(8, 12, 12), spacing=(1, 1, 1))
        args = ["train", str(dataset), "--workspace", str(tmp_path / "ws"), "-c", "3d_fullres", "-n", "unet_resenc"]
        args += ["-f", "0", "trainer=cpu_short", "trainer.num_epochs=1", "trainer.iterations_per_epoch=2"]
        args += ["trainer.val_iterations=1", "num_workers=1"]
        with caplog.at_level("INFO", logger="mambaseg.training.run"):
            assert main(args) == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert "num_workers 1 beside 2 torch threads would oversubscribe the 2 CPU cores: 0 workers, 2 threads" in (
        caplog.text
    )


def test_usable_cores_without_an_affinity_call_is_every_core(monkeypatch):
    """macOS and Windows have no os.sched_getaffinity: CPU training counts every core there instead of failing."""
    import os

    from mambaseg.training.run import usable_cpu_cores

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0})
    assert usable_cpu_cores() == 1
    monkeypatch.delattr("os.sched_getaffinity")
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    assert usable_cpu_cores() == 6
    monkeypatch.setattr("os.cpu_count", lambda: None)
    assert usable_cpu_cores() == 1 and not hasattr(os, "sched_getaffinity")
