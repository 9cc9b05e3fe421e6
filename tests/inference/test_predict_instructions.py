"""`mambaseg predict -d DATASET`: the runs of ``inference_instructions.json`` averaged, then postprocessing.

Two tiny runs of one synthetic dataset with different plans (3d_fullres and 2d) form the ensemble. The
postprocessing test replaces the networks by a fixed function (the normalised input's sign), so the
mask before postprocessing is known: two blobs, of which only the larger may remain.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mambaseg.cli.main import main
from mambaseg.inference import runs
from mambaseg.inference.postprocessing import (
    InferenceInstructions,
    apply_postprocessing,
    keep_largest_component_step,
)
from mambaseg.io import Image, read_image, write_image
from mambaseg.workspace import Workspace
from tests.data.synthetic import write_nnunet_dataset

LABELS = {"background": 0, "left": 1, "right": 2}
TRAIN = ["-n", "unet_resenc", "-f", "0", "trainer=cpu_short", "trainer.num_epochs=1"]
TRAIN += ["trainer.iterations_per_epoch=2", "trainer.val_iterations=1", "num_workers=0"]
FAST = ["--no-mirroring", "--device", "cpu"]
RUNS = ["Synthetic/runs/3d_fullres__unet_resenc", "Synthetic/runs/2d__unet_resenc"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> tuple[Path, Path]:
    """(workspace with a 3d_fullres and a 2d run of dataset ``Synthetic``, folder of 2 test images)."""
    root = tmp_path_factory.mktemp("instructions")
    dataset = write_nnunet_dataset(
        root / "Dataset001_Tiny", n_cases=5, n_test=2, shape=(8, 12, 12), spacing=(1, 1, 1), labels=LABELS
    )
    for configuration in ("3d_fullres", "2d"):
        assert main(["train", str(dataset), "--workspace", str(root / "ws"), "-c", configuration, *TRAIN]) == 0
    return root / "ws", dataset / "imagesTs"


def write_instructions(workspace: Path, run_names: list[str], postprocessing: list[dict] | None = None) -> Path:
    instructions = InferenceInstructions("Synthetic", run_names, [0], postprocessing or [])
    path = Workspace(workspace).dataset("Synthetic").instructions
    path.write_text(json.dumps(instructions.to_dict(), indent=2))
    return path


def predict(source: Path, out: Path, *model: str) -> int:
    return main(["predict", "-i", str(source), "-o", str(out), *model, *FAST])


def instructed(workspace: Path) -> list[str]:
    return ["-d", "Synthetic", "--workspace", str(workspace)]


def _error(capsys) -> str:
    return " ".join(capsys.readouterr().out.split())


def test_the_ensemble_averages_the_runs_probabilities(workspace, tmp_path):
    ws, images = workspace
    write_instructions(ws, RUNS)
    for index, run in enumerate(RUNS):
        assert predict(images, tmp_path / f"run{index}", "-m", str(ws / run), "--save-probabilities") == 0
    assert predict(images, tmp_path / "ensemble", *instructed(ws), "--save-probabilities") == 0
    for case in ("case_005", "case_006"):
        single = [np.load(tmp_path / f"run{i}" / f"{case}.npz")["probabilities"].astype(np.float32) for i in (0, 1)]
        average = (single[0] + single[1]) / 2  # (k, *input)
        ensemble = np.load(tmp_path / "ensemble" / f"{case}.npz")["probabilities"].astype(np.float32)
        np.testing.assert_allclose(ensemble, average, atol=2e-3)
        mask = read_image(tmp_path / "ensemble" / f"{case}.nii.gz")
        assert mask.same_geometry(read_image(images / f"{case}_0000.nii.gz"), tol=1e-6)
        ordered = np.sort(average, axis=0)
        confident = ordered[-1] - ordered[-2] > 5e-3
        assert confident.mean() > 0.5
        np.testing.assert_array_equal(mask.array[confident], average.argmax(0)[confident])
        sidecar = json.loads((tmp_path / "ensemble" / f"{case}.json").read_text())
        assert sidecar["model"] == "3d_fullres__unet_resenc + 2d__unet_resenc"
        assert sidecar["classes"] == list(LABELS)


class SignNet(nn.Module):
    """Logits whose argmax is class 1 where the normalised input is above 0, else background; class 2 never."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 10 * torch.cat([-x, x, torch.full_like(x, -1.0)], dim=1)


def test_postprocessing_of_the_instructions_removes_a_spurious_blob(workspace, tmp_path, monkeypatch):
    ws, _ = workspace
    monkeypatch.setattr(runs, "load_model", lambda run, checkpoint, device: SignNet())
    values = np.full((10, 16, 16), -51, dtype=np.int16)
    values[2:7, 3:10, 3:10] = 51  # the organ
    values[8:10, 13:15, 13:15] = 51  # a spurious blob, not touching it
    source = tmp_path / "in" / "scan.nii.gz"
    write_image(Image(values, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel())), source)
    write_instructions(ws, RUNS, [keep_largest_component_step([1, 2], jointly=True)])
    assert predict(source.parent, tmp_path / "single", "-m", str(ws / RUNS[0])) == 0
    np.testing.assert_array_equal(read_image(tmp_path / "single" / "scan.nii.gz").array, values > 0)
    assert predict(source.parent, tmp_path / "out", *instructed(ws)) == 0
    expected = np.zeros(values.shape, dtype=bool)
    expected[2:7, 3:10, 3:10] = True
    np.testing.assert_array_equal(read_image(tmp_path / "out" / "scan.nii.gz").array, expected)


def test_missing_or_broken_instructions_are_refused_with_a_clear_error(workspace, tmp_path, capsys):
    ws, images = workspace
    instructions = Workspace(ws).dataset("Synthetic").instructions
    instructions.unlink(missing_ok=True)
    assert predict(images, tmp_path / "out", *instructed(ws)) == 1
    assert f"{instructions}: no inference instructions; run find-best on Synthetic first" in _error(capsys)
    assert predict(images, tmp_path / "out", "-d", "Dataset001_Tiny", "--workspace", str(ws)) == 1
    assert "no dataset 'Dataset001_Tiny' in the workspace (datasets with instructions: none)" in _error(capsys)
    write_instructions(ws, [RUNS[0], "Synthetic/runs/3d_fullres__missing"])
    assert predict(images, tmp_path / "out", *instructed(ws)) == 1
    assert f"{instructions}: run 'Synthetic/runs/3d_fullres__missing'" in _error(capsys)
    write_instructions(ws, RUNS)
    assert predict(images, tmp_path / "out", *instructed(ws), "-f", "0") == 1
    assert "with dataset the instructions choose the folds" in _error(capsys)
    assert predict(images, tmp_path / "out", "-d", "Synthetic", "-m", str(ws / RUNS[0])) == 1
    assert "not allowed with argument" in _error(capsys)
    assert not (tmp_path / "out").exists()


def test_predict_follows_what_find_best_wrote(workspace, tmp_path):
    ws, images = workspace
    (Workspace(ws).dataset("Synthetic").instructions).unlink(missing_ok=True)
    assert main(["find-best", str(images.parent), "--workspace", str(ws), "--folds", "0"]) == 0
    chosen = json.loads((Workspace(ws).dataset("Synthetic").instructions).read_text())
    assert chosen["folds"] == [0] and chosen["skipped"] == []  # validation saved probabilities: the pair is ranked
    assert len(chosen["ranking"]) == 3  # both runs and their ensemble (tests/cli/test_ensemble.py follows a pair)
    assert main(["find-best", str(images.parent), "--workspace", str(ws), "--folds", "0", "--no-ensembles"]) == 0
    chosen = json.loads((Workspace(ws).dataset("Synthetic").instructions).read_text())
    assert len(chosen["runs"]) == 1 and chosen["runs"][0] in RUNS
    assert predict(images, tmp_path / "out", *instructed(ws)) == 0
    assert predict(images, tmp_path / "single", "-m", str(ws / chosen["runs"][0])) == 0
    for case in ("case_005", "case_006"):
        mask = read_image(tmp_path / "out" / f"{case}.nii.gz")
        assert mask.same_geometry(read_image(images / f"{case}_0000.nii.gz"), tol=1e-6)
        single = read_image(tmp_path / "single" / f"{case}.nii.gz").array
        np.testing.assert_array_equal(mask.array, apply_postprocessing(single, chosen["postprocessing"]))
