"""`mambaseg ensemble`, and find-best ensembling two really trained runs from their validation probabilities.

Two tiny runs (3d_fullres and 2d, unet_resenc) of one synthetic dataset are trained by ``mambaseg train``,
whose final validation saves ``validation/CASE.npz``; find-best then ranks the pair's ensemble, and
``mambaseg ensemble`` averages folders of probabilities written by ``predict --save-probabilities``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mambaseg.cli.main import main
from mambaseg.evaluation.dice import dice_per_class
from mambaseg.inference.postprocessing import apply_postprocessing
from mambaseg.io import Image, read_image, write_image
from tests.data.synthetic import write_nnunet_dataset

LABELS = {"background": 0, "left": 1, "right": 2}
TRAIN = ["-n", "unet_resenc", "-f", "0", "trainer=cpu_short", "trainer.num_epochs=1"]
TRAIN += ["trainer.iterations_per_epoch=2", "trainer.val_iterations=1", "num_workers=0"]
FAST = ["--no-mirroring", "--device", "cpu"]
RUNS = ["3d_fullres__unet_resenc", "2d__unet_resenc"]
PAIR = "2d__unet_resenc + 3d_fullres__unet_resenc"  # find-best pairs runs in folder order
TEST_CASES = ("case_005", "case_006")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(workspace with a 3d_fullres and a 2d run of dataset ``Synthetic``, the dataset folder)."""
    root = tmp_path_factory.mktemp("ensemble")
    dataset = write_nnunet_dataset(
        root / "Dataset001_Tiny", n_cases=5, n_test=2, shape=(8, 12, 12), spacing=(1, 1, 1), labels=LABELS
    )
    for configuration in ("3d_fullres", "2d"):
        assert main(["train", str(dataset), "--workspace", str(root / "ws"), "-c", configuration, *TRAIN]) == 0
    return root / "ws", dataset


def runs_folder(workspace: Path) -> Path:
    return workspace / "Synthetic" / "runs"


def probabilities(path: Path) -> np.ndarray:
    return np.load(path)["probabilities"].astype(np.float32)


def validation_case(workspace: Path) -> str:
    splits = json.loads((workspace / "Synthetic" / "splits.json").read_text())
    (case,) = splits[0]["val"]  # 5 cases in 5 folds: one validation case per fold
    return case


@pytest.mark.slow
def test_training_saves_validation_probabilities_in_the_case_geometry(trained):
    workspace, dataset = trained
    case = validation_case(workspace)
    reference = read_image(dataset / "labelsTr" / f"{case}.nii.gz")
    for run in RUNS:
        validation = runs_folder(workspace) / run / "fold_0" / "validation"
        saved = np.load(validation / f"{case}.npz")["probabilities"]
        assert saved.dtype == np.float16 and saved.shape == (len(LABELS), *reference.array.shape)
        np.testing.assert_allclose(saved.astype(np.float32).sum(0), 1.0, atol=5e-3)  # softmax over the classes
        mask = read_image(validation / f"{case}.nii.gz").array
        ordered = np.sort(saved.astype(np.float32), axis=0)
        confident = ordered[-1] - ordered[-2] > 5e-3
        np.testing.assert_array_equal(mask[confident], saved.argmax(0)[confident])


@pytest.mark.slow
def test_find_best_ranks_the_pair_of_real_runs_and_predict_follows_the_choice(trained, tmp_path, capsys):
    workspace, dataset = trained
    assert main(["find-best", str(dataset), "--workspace", str(workspace), "--folds", "0"]) == 0
    out = capsys.readouterr().out
    assert "skipped" not in out
    instructions = json.loads((workspace / "Synthetic" / "inference_instructions.json").read_text())
    assert instructions["skipped"] == []
    ranked = {entry["candidate"]: entry for entry in instructions["ranking"]}
    assert set(ranked) == {*RUNS, PAIR}

    # the pair's Dice is that of the ensemble of the two validation folders against the reference
    case = validation_case(workspace)
    folders = [str(runs_folder(workspace) / run / "fold_0" / "validation") for run in RUNS]
    assert main(["ensemble", "-i", *folders, "-o", str(tmp_path / "val_ensemble")]) == 0
    ensembled = read_image(tmp_path / "val_ensemble" / f"{case}.nii.gz")
    reference = read_image(dataset / "labelsTr" / f"{case}.nii.gz")
    assert ensembled.same_geometry(reference, tol=1e-6)
    averaged = (probabilities(Path(folders[0]) / f"{case}.npz") + probabilities(Path(folders[1]) / f"{case}.npz")) / 2
    np.testing.assert_array_equal(ensembled.array, averaged.argmax(0))
    expected = dice_per_class(ensembled.array, np.rint(reference.array).astype(np.uint8), [1, 2])
    for label in (1, 2):
        got, want = ranked[PAIR]["dice_per_class"][str(label)], expected[label]
        assert (got is None and np.isnan(want)) or got == pytest.approx(want)

    # predict -d follows the chosen candidate: its runs' probabilities averaged, then its postprocessing
    images = dataset / "imagesTs"
    chosen = [Path(run).name for run in instructions["runs"]]
    assert " + ".join(chosen) == instructions["ranking"][0]["candidate"]
    out_dir = tmp_path / "instructed"
    assert (
        main(
            [
                "predict",
                "-i",
                str(images),
                "-o",
                str(out_dir),
                "-d",
                "Synthetic",
                "--workspace",
                str(workspace),
                "--save-probabilities",
                *FAST,
            ]
        )
        == 0
    )
    for run in chosen:
        single = ["-m", str(runs_folder(workspace) / run), "--save-probabilities", *FAST]
        assert main(["predict", "-i", str(images), "-o", str(tmp_path / run), *single]) == 0
    for case in TEST_CASES:
        assert json.loads((out_dir / f"{case}.json").read_text())["model"] == " + ".join(chosen)
        average = sum(probabilities(tmp_path / run / f"{case}.npz") for run in chosen) / len(chosen)
        expected_mask = apply_postprocessing(average.argmax(0).astype(np.uint8), instructions["postprocessing"])
        ordered = np.sort(average, axis=0)
        confident = ordered[-1] - ordered[-2] > 5e-3  # float16 files: near-ties may go either way
        assert confident.mean() > 0.5
        mask = read_image(out_dir / f"{case}.nii.gz").array
        np.testing.assert_array_equal(mask[confident], expected_mask[confident])


@pytest.mark.slow
def test_ensemble_of_two_predict_folders_is_the_argmax_of_the_averaged_probabilities(trained, tmp_path, capsys):
    workspace, dataset = trained
    images = dataset / "imagesTs"
    folders = []
    for run in RUNS:
        folders.append(tmp_path / run)
        args = ["predict", "-i", str(images), "-o", str(folders[-1]), "-m", str(runs_folder(workspace) / run)]
        assert main([*args, "--save-probabilities", *FAST]) == 0
    (folders[1] / f"{TEST_CASES[1]}.npz").unlink()  # a case missing from one folder is left out
    out = tmp_path / "ensemble"
    assert main(["ensemble", "-i", *map(str, folders), "-o", str(out), "--save-probabilities"]) == 0
    assert f"left out: {TEST_CASES[1]}" in capsys.readouterr().out
    assert sorted(path.name for path in out.iterdir()) == [f"{TEST_CASES[0]}.nii.gz", f"{TEST_CASES[0]}.npz"]
    average = sum(probabilities(folder / f"{TEST_CASES[0]}.npz") for folder in folders) / 2
    mask = read_image(out / f"{TEST_CASES[0]}.nii.gz")
    np.testing.assert_array_equal(mask.array, average.argmax(0))
    assert mask.same_geometry(read_image(images / f"{TEST_CASES[0]}_0000.nii.gz"), tol=1e-6)
    np.testing.assert_allclose(probabilities(out / f"{TEST_CASES[0]}.npz"), average, atol=1e-3)


def write_prediction(folder: Path, case: str, classes: int, spacing=(1.0, 1.0, 1.0), sidecar: bool = True) -> None:
    """A one-hot prediction of a (4, 5, 6) case: probabilities and either a sidecar or a mask beside them."""
    folder.mkdir(parents=True, exist_ok=True)
    mask = np.zeros((4, 5, 6), np.uint8)
    mask[1:3, 1:4, 2:5] = classes - 1
    one_hot = np.eye(classes, dtype=np.float16)[mask].transpose(3, 0, 1, 2)
    np.savez_compressed(folder / f"{case}.npz", probabilities=one_hot)
    image = Image(mask, spacing, (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    if sidecar:
        geometry = {
            "shape": list(mask.shape),
            "spacing": list(spacing),
            "origin": [0, 0, 0],
            "direction": list(np.eye(3).ravel()),
        }
        (folder / f"{case}.json").write_text(json.dumps(geometry))
    else:
        write_image(image, folder / f"{case}.nii.gz")


def _error(capsys) -> str:
    return " ".join(capsys.readouterr().out.split())


def test_ensemble_refuses_other_classes_or_geometry_naming_the_files(tmp_path, capsys):
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    write_prediction(a, "x", 3)
    write_prediction(b, "x", 2, sidecar=False)
    assert main(["ensemble", "-i", str(a), str(b), "-o", str(out)]) == 1
    assert f"{b / 'x.npz'} has 2 classes and {a / 'x.npz'} 3" in _error(capsys)
    write_prediction(b, "x", 3, spacing=(1.0, 1.0, 2.0), sidecar=False)
    assert main(["ensemble", "-i", str(a), str(b), "-o", str(out)]) == 1
    assert f"{b / 'x.nii.gz'}: spacing (1.0, 1.0, 2.0) differs from (1.0, 1.0, 1.0) of {a / 'x.json'}" in _error(capsys)
    assert not out.exists()
    write_prediction(b, "x", 3, sidecar=False)  # the geometry from the mask beside the probabilities
    assert main(["ensemble", "-i", str(a), str(b), "-o", str(out)]) == 0
    assert read_image(out / "x.nii.gz").array.max() == 2


def test_ensemble_needs_two_folders_with_common_cases(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    write_prediction(a, "x", 2)
    assert main(["ensemble", "-i", str(a), "-o", str(tmp_path / "out")]) == 1
    assert "-i/--input: give at least two folders" in _error(capsys)
    b.mkdir()
    assert main(["ensemble", "-i", str(a), str(b), "-o", str(tmp_path / "out")]) == 1
    assert f"-i/--input: {b} holds no CASE.npz" in _error(capsys)
    write_prediction(b, "y", 2)
    assert main(["ensemble", "-i", str(a), str(b), "-o", str(tmp_path / "out")]) == 1
    assert "no case has probabilities in every folder" in _error(capsys)
    (b / "x.npz").write_bytes((a / "x.npz").read_bytes())
    assert main(["ensemble", "-i", str(a), str(b), "-o", str(a)]) == 1
    assert f"-o/--output {a}: is one of the input folders" in _error(capsys)
    assert main(["ensemble", "-i", str(a), str(b), "-o", str(tmp_path / "out")]) == 1  # b/x has no geometry
    assert f"{b / 'x.npz'}: neither x.json nor a mask of 'x' beside it gives its geometry" in _error(capsys)
