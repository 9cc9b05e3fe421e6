"""`mambaseg train` end to end on a tiny synthetic dataset: run folder, resume, determinism."""

import json

import pytest
import torch

from mambaseg.cli.main import main
from mambaseg.planning.checkpoint import load_checkpoint
from tests.data.synthetic import write_nnunet_dataset

SHORT = [
    "trainer=cpu_short",
    "trainer.num_epochs=2",
    "trainer.iterations_per_epoch=2",
    "trainer.val_iterations=1",
    "trainer.checkpoint_every=1",
    "num_workers=0",
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_nnunet_dataset(
        tmp_path_factory.mktemp("raw") / "Dataset001_Tiny", n_cases=5, shape=(8, 12, 12), spacing=(1, 1, 1)
    )


def train(dataset, workspace, *extra):
    args = ["train", str(dataset), "--workspace", str(workspace), "-c", "3d_fullres", "-n", "unet_resenc", "-f", "0"]
    return main([*args, *extra, *SHORT])


@pytest.mark.slow
def test_train_writes_a_complete_run_folder_and_refuses_to_overwrite_it(dataset, tmp_path):
    assert train(dataset, tmp_path) == 0
    run = tmp_path / "Synthetic" / "runs" / "3d_fullres__unet_resenc" / "fold_0"
    for name in (
        "checkpoint_final.pt",
        "checkpoint_best.pt",
        "config.yaml",
        "plan.json",
        "metrics.csv",
        "progress.png",
        "training.log",
        "validation/summary.json",
    ):
        assert (run / name).is_file(), name
    summary = json.loads((run / "validation" / "summary.json").read_text())
    assert summary["label_names"] == {"1": "foreground"} and summary["metrics"] == ["dice", "hd95", "nsd"]
    assert len(summary["cases"]) == 1  # 5 cases, fold 0 validates one
    checkpoint = load_checkpoint(run / "checkpoint_final.pt")
    assert checkpoint.epoch == 2 and checkpoint.config["trainer"]["num_epochs"] == 2
    assert train(dataset, tmp_path) == 1  # a finished run is not overwritten
    (run / "validation" / "summary.json").unlink()
    assert train(dataset, tmp_path, "--val") == 0  # validating again from checkpoint_final gives the same scores
    assert json.loads((run / "validation" / "summary.json").read_text()) == summary


@pytest.mark.slow
def test_continue_resumes_and_deterministic_runs_match(dataset, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    assert train(dataset, first, "--deterministic", "trainer.num_epochs=1") == 0
    run = first / "Synthetic" / "runs" / "3d_fullres__unet_resenc" / "fold_0"
    (run / "checkpoint_final.pt").rename(run / "checkpoint_latest.pt")  # as if stopped after epoch 1
    assert train(dataset, first, "--deterministic", "--continue") == 0
    assert train(dataset, second, "--deterministic") == 0
    resumed = load_checkpoint(run / "checkpoint_final.pt")
    straight = load_checkpoint(
        second / "Synthetic" / "runs" / "3d_fullres__unet_resenc" / "fold_0" / "checkpoint_final.pt"
    )
    assert resumed.epoch == straight.epoch == 2
    for name, tensor in straight.model.items():
        assert torch.equal(resumed.model[name], tensor), name
