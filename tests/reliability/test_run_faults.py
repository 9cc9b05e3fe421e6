"""Runs that must not be overwritten or mixed: an interrupted run started again, a fold of another model."""

from __future__ import annotations

import shutil

import pytest

from mambaseg.cli.main import main
from mambaseg.workspace import Workspace
from tests.data.synthetic import file_states, write_nnunet_dataset

TINY = ["-c", "3d_fullres", "-n", "unet_resenc", "trainer=cpu_short", "trainer.num_epochs=1"]
TINY += ["trainer.iterations_per_epoch=2", "trainer.val_iterations=1", "trainer.checkpoint_every=1", "num_workers=0"]


def _train(dataset, workspace, fold="0", *extra) -> int:
    return main(["train", str(dataset), "--workspace", str(workspace), "-f", fold, "--workers", "1", *TINY, *extra])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A workspace with fold 0 of ``Synthetic`` and of ``Other`` trained (same shapes, other data)."""
    root = tmp_path_factory.mktemp("runs")
    first = write_nnunet_dataset(root / "Dataset001_A", n_cases=5, n_test=1, shape=(8, 12, 12), spacing=(1, 1, 1))
    second = write_nnunet_dataset(
        root / "Dataset002_B", n_cases=6, shape=(8, 12, 12), spacing=(1, 1, 1), name="Other", prefix="other"
    )
    for dataset in (first, second):
        assert _train(dataset, root / "ws") == 0
    return root / "ws", first


@pytest.mark.slow
def test_an_interrupted_run_is_not_started_over_without_continue(trained, tmp_path, capsys):
    ws, dataset = trained
    fold = Workspace(ws).dataset("Synthetic").run("3d_fullres", "unet_resenc").fold(0)
    interrupted = tmp_path / "ws"
    shutil.copytree(ws, interrupted)
    copy = Workspace(interrupted).dataset("Synthetic").run("3d_fullres", "unet_resenc").fold(0)
    copy.checkpoints.final.unlink()  # as if killed after the last periodic checkpoint
    before = file_states(copy.folder)
    capsys.readouterr()
    assert _train(dataset, interrupted) == 1
    error = capsys.readouterr().out
    assert f"{copy.folder} holds an interrupted run" in error and "--continue" in error
    assert "checkpoint_latest.pt" in error and "continue_training" not in error
    assert file_states(copy.folder) == before  # checkpoints and metrics.csv untouched
    assert _train(dataset, interrupted, "0", "--continue") == 0
    assert copy.checkpoints.final.is_file() and fold.checkpoints.final.is_file()


@pytest.mark.slow
def test_a_fold_of_another_model_is_refused_naming_its_checkpoint(trained, tmp_path, capsys):
    ws, dataset = trained
    run = Workspace(ws).dataset("Synthetic").run("3d_fullres", "unet_resenc")
    mixed = tmp_path / "mixed" / run.name
    shutil.copytree(run.folder, mixed)
    other = Workspace(ws).dataset("Other").run("3d_fullres", "unet_resenc").fold(0)
    shutil.copytree(other.folder, mixed / "fold_1")  # same network and shapes: its weights would load
    shutil.copy(run.fold(0).plan, mixed / "fold_1" / "plan.json")  # even with the run's own plan beside it
    capsys.readouterr()
    status = main(["predict", "-i", str(dataset / "imagesTs"), "-o", str(tmp_path / "out"), "-m", str(mixed)])
    assert status == 1
    error = capsys.readouterr().out
    assert str(mixed / "fold_1" / "checkpoint_final.pt") in error and "dataset 'Other'" in error
    assert not (tmp_path / "out").exists()


def _error(capsys) -> str:
    return " ".join(capsys.readouterr().out.split())


@pytest.mark.slow
def test_continue_extends_a_longer_run_and_refuses_other_changed_settings(tmp_path, capsys):
    import csv

    dataset = write_nnunet_dataset(tmp_path / "Dataset001_A", n_cases=5, shape=(8, 12, 12), spacing=(1, 1, 1))
    ws = tmp_path / "ws"
    assert _train(dataset, ws, "0", "trainer.num_epochs=2") == 0
    fold = Workspace(ws).dataset("Synthetic").run("3d_fullres", "unet_resenc").fold(0)
    before = file_states(fold.folder)
    refusals = {
        "trainer.grad_clip=1.0": "trainer.grad_clip: 12.0 -> 1.0",
        "trainer.num_epochs=1": "trainer.num_epochs: 2 -> 1 (a run is not shortened",
        "trainer.time_budget_minutes=5": "trainer.time_budget_minutes: None -> 5",
    }
    for override, named in refusals.items():
        assert _train(dataset, ws, "0", "--continue", override) == 1, override
        shown = _error(capsys)
        assert "--continue resumes the run as it was configured" in shown and named in shown, shown
    assert file_states(fold.folder) == before
    assert _train(dataset, ws, "0", "--continue", "trainer.num_epochs=4", "num_workers=0") == 0
    with open(fold.folder / "metrics.csv") as handle:
        rates = [float(row["lr"]) for row in csv.DictReader(handle)]
    assert len(rates) == 4 and rates[2] == pytest.approx(1e-2 * (1 - 2 / 4) ** 0.9, rel=1e-6)  # poly of 4 epochs
    assert rates[3] == pytest.approx(1e-2 * (1 - 3 / 4) ** 0.9, rel=1e-6) and rates[3] > 0


@pytest.mark.slow
def test_an_edited_plan_json_is_refused_naming_the_field(trained, tmp_path, capsys):
    import json

    ws, dataset = trained
    run = Workspace(ws).dataset("Synthetic").run("3d_fullres", "unet_resenc")
    edited = tmp_path / "edited" / run.name
    shutil.copytree(run.folder, edited)
    plan_file = edited / "fold_0" / "plan.json"
    plan = json.loads(plan_file.read_text())
    plan["patch_size"] = [size * 2 for size in plan["patch_size"]]
    plan_file.write_text(json.dumps(plan))
    images = dataset / "imagesTs"
    capsys.readouterr()
    assert main(["predict", "-i", str(images), "-o", str(tmp_path / "out"), "-m", str(edited)]) == 1
    shown = _error(capsys)
    assert "its fold's plan.json differs from the plan the checkpoint was trained with (patch_size:" in shown
    assert not (tmp_path / "out").exists()
