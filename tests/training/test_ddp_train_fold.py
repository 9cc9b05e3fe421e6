"""The real ``train_fold`` under DDP: two gloo processes train as one process with the same global batch.

Both runs train ``unet_resenc`` (the planned network, deep supervision, the trainer's schedule, SGD with momentum
and gradient clipping) from the same preprocessed tiny dataset and the same plan, with ``batch_size=2`` and
augmentation off, each process on one CPU thread. Under DDP each of the two processes trains on one patch: the
patch that the single process draws at that place in its batch of two (``PatchBatches``), and DDP averages the
gradients, which is the gradient of the single process's loss (a mean over the batch; instance norm and the
per-sample Dice keep the samples independent).

The weights after two iterations agree within rtol 1e-4 and atol 1e-5, not exactly: averaging the gradients of
two halves adds in another order than the single process's reductions over its batch of two (float32 rounding, of
order 1e-7 relative), and momentum carries that into the second step. The test also checks that training moved the
weights by far more than that tolerance, so that the agreement is not the agreement of two untrained networks.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from mambaseg.data import load_dataset
from mambaseg.planning.model import build_network
from mambaseg.training.run import train_fold
from mambaseg.workspace import Workspace, preprocess
from mambaseg.workspace.config import compose_train_config
from mambaseg.workspace.training import run_spec
from tests.data.synthetic import write_nnunet_dataset
from tests.processes import GLOO_TIMEOUT, leave_group, run_workers

OVERRIDES = [
    "trainer=cpu_short",
    "trainer.num_epochs=1",
    "trainer.iterations_per_epoch=2",
    "trainer.val_iterations=1",
    "augmentation=none",
    "batch_size=2",
    "num_workers=0",
    "trainer.amp=false",  # float32 on every CPU: the tolerance below argues float32 rounding, not bf16 autocast's
]
NETWORK = "unet_resenc"


def _spec(dataset_dir: str, workspace: str, runs: str):
    """The fold to train, its run files under ``runs`` (another workspace folder), the data from ``workspace``."""
    dataset = load_dataset(Path(dataset_dir))
    spec = run_spec(dataset, Workspace(Path(workspace)), "3d_fullres", NETWORK, "0", workers=1)
    files = Workspace(Path(runs)).dataset(dataset.name).run("3d_fullres", spec.plan.network).fold("0")
    return dataclasses.replace(spec, files=files)


def _train(rank: int, world: int, store: str, dataset_dir: str, workspace: str, runs: str, result: str) -> None:
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group(
            "gloo", init_method=f"file://{store}", rank=rank, world_size=world, timeout=GLOO_TIMEOUT
        )
    try:
        model = train_fold(_spec(dataset_dir, workspace, runs), compose_train_config(OVERRIDES), torch.device("cpu"))
        if rank == 0:
            torch.save(model.state_dict(), result)
    finally:
        if world > 1:
            leave_group()


@pytest.mark.slow
def test_two_processes_train_a_fold_as_one_process_with_the_same_global_batch(tmp_path):
    dataset_dir = write_nnunet_dataset(tmp_path / "Dataset001_Tiny", n_cases=5, shape=(8, 12, 12), spacing=(1, 1, 1))
    workspace = tmp_path / "ws"
    preprocess(dataset_dir, workspace, ["3d_fullres"], workers=1)
    spec = _spec(str(dataset_dir), str(workspace), str(tmp_path / "unused"))  # writes splits.json before the runs
    assert spec.plan.network == NETWORK

    results = {}
    for world in (2, 1):
        results[world] = tmp_path / f"weights_{world}.pt"
        folders = (tmp_path / f"store_{world}", dataset_dir, workspace, tmp_path / f"runs_{world}", results[world])
        run_workers(_train, (world, *map(str, folders)), nprocs=world, timeout_s=120)
    ddp = torch.load(results[2], weights_only=True)
    single = torch.load(results[1], weights_only=True)

    torch.manual_seed(int(compose_train_config(OVERRIDES)["seed"]))  # train_fold's initial weights (rank 0's)
    initial = build_network(spec.plans, spec.plan).state_dict()
    moved = max((single[name].float() - tensor.float()).abs().max().item() for name, tensor in initial.items())
    assert moved > 1e-3
    assert ddp.keys() == single.keys()
    for name, tensor in single.items():
        torch.testing.assert_close(ddp[name], tensor, rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
