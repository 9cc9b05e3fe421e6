"""Every form of a trained model predicts the same masks through the one pipeline, on a region-based dataset.

What ``train``, ``find-best`` and ``export-model`` really wrote, predicted through the CLI: a run folder, a cascade
run (its 3d_lowres stage first), an ensemble of a cascade and a run (``predict -d``), a zip of the cascade, a zip
of the ensemble (every member and the cascade's lowres stage in it), a ``.pt2`` program of a run, and the same
model in memory (``mambaseg.Predictor``). The dataset is region-based (``whole`` = {1, 2}, ``core`` = {2}), so
every form goes through the region step (sigmoids painted in ``regions_class_order``), the cascade included.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

import mambaseg
from mambaseg.cli.main import main
from mambaseg.io import read_image
from mambaseg_datasets.large_synthetic import write_large_synthetic_dataset

NETWORK = "unet_resenc"
TRAIN = [
    "-n",
    NETWORK,
    "trainer=cpu_short",
    "trainer.num_epochs=1",
    "trainer.iterations_per_epoch=2",
    "trainer.val_iterations=1",
    "num_workers=0",
    "validation.step=1",
]
FAST = ["--no-mirroring", "--step", "1", "--precision", "float32"]
REGION_LABELS = {"background": 0, "whole": [1, 2], "core": 2}
FULLRES, CASCADE, LOWRES = (f"{c}__{NETWORK}" for c in ("3d_fullres", "3d_cascade_fullres", "3d_lowres"))


def write_region_dataset(root: Path) -> Path:
    """The large synthetic dataset with each sphere's inner part labelled 2 (``core``), described as regions."""
    dataset = write_large_synthetic_dataset(root, n_train=5, n_test=2, shape=(24, 24, 24), seed=3)
    for label_file in sorted((dataset / "labelsTr").glob("*.nii.gz")) + sorted((dataset / "labelsTs").glob("*")):
        image = nib.load(label_file)
        sphere = np.asarray(image.dataobj) > 0
        label = sphere.astype(np.uint8) + ndimage.binary_erosion(sphere, iterations=2).astype(np.uint8)
        nib.save(nib.Nifti1Image(label, image.affine), label_file)
    description = json.loads((dataset / "dataset.json").read_text())
    description["labels"] = REGION_LABELS
    description["regions_class_order"] = [1, 2]
    (dataset / "dataset.json").write_text(json.dumps(description))
    return dataset


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(workspace, dataset, its test images): a 3d_fullres run, 3d_lowres folds 0-4, a cascade run, find-best."""
    root = tmp_path_factory.mktemp("forms")
    dataset = write_region_dataset(root / "raw")
    ws = root / "ws"
    assert main(["plan", str(dataset), "--workspace", str(ws), "--gpu-memory", "0.05", "--network", NETWORK]) == 0

    def train(configuration: str, fold: int) -> None:
        command = ["train", str(dataset), "--workspace", str(ws), "-c", configuration, "-f", str(fold), *TRAIN]
        assert main(command) == 0

    for fold in range(5):
        train("3d_lowres", fold)
    train("3d_cascade_fullres", 0)
    train("3d_fullres", 0)
    assert main(["find-best", str(dataset), "--workspace", str(ws), "--folds", "0"]) == 0
    return ws, dataset, dataset / "imagesTs"


def predict(images: Path, out: Path, *model: str) -> dict[str, np.ndarray]:
    assert main(["predict", "-i", str(images), "-o", str(out), *model, *FAST]) == 0
    return {path.name: read_image(path).array for path in sorted(out.glob("*.nii.gz"))}


def assert_same(masks: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> None:
    assert masks.keys() == reference.keys() and len(reference) == 2
    for name, mask in masks.items():
        assert np.array_equal(mask, reference[name]), name


def instruct(ws: Path, runs: list[str]) -> None:
    """find-best's instructions, made to name ``runs`` (find-best's own choice on two tiny runs is a coin toss)."""
    path = ws / "LargeSynthetic" / "inference_instructions.json"
    instructions = json.loads(path.read_text())
    instructions["runs"] = [f"LargeSynthetic/runs/{run}" for run in runs]
    path.write_text(json.dumps(instructions))


@pytest.mark.slow
def test_every_form_predicts_the_masks_of_the_run_folders(trained, tmp_path):
    ws, _, images = trained
    runs = ws / "LargeSynthetic" / "runs"
    plans = json.loads((ws / "LargeSynthetic" / "plans.json").read_text())
    assert plans["configurations"]["3d_cascade_fullres"]["previous_stage_labels"] == [1, 2]  # regions' labels

    fullres = predict(images, tmp_path / "fullres", "-m", str(runs / FULLRES))
    cascade = predict(images, tmp_path / "cascade", "-m", str(runs / CASCADE))
    assert all(set(np.unique(mask)) <= {0, 1, 2} for mask in cascade.values())
    instruct(ws, [CASCADE, FULLRES])
    ensemble = predict(images, tmp_path / "ensemble", "-d", "LargeSynthetic", "--workspace", str(ws))

    cascade_zip, ensemble_zip, program = tmp_path / "cascade.zip", tmp_path / "ensemble.zip", tmp_path / "run.pt2"
    assert main(["export-model", "LargeSynthetic", str(cascade_zip), "--workspace", str(ws), "--runs", CASCADE]) == 0
    assert main(["export-model", "LargeSynthetic", str(ensemble_zip), "--workspace", str(ws)]) == 0
    assert main(["export-model", "LargeSynthetic", str(program), "--workspace", str(ws), "--runs", FULLRES]) == 0

    with zipfile.ZipFile(ensemble_zip) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        stored = {name for name in archive.namelist() if name.endswith("checkpoint_final.pt")}
    lowres_entry = {"run": f"LargeSynthetic/runs/{LOWRES}", "folds": ["0", "1", "2", "3", "4"]}
    assert manifest["runs"] == [
        {"run": f"LargeSynthetic/runs/{CASCADE}", "folds": ["0"], "previous": [lowres_entry]},
        {"run": f"LargeSynthetic/runs/{FULLRES}", "folds": ["0"]},
    ]
    assert len(stored) == 7  # 5 lowres folds, the cascade's and the fullres run's
    originals = sum(path.stat().st_size for path in runs.glob("*/fold_*/checkpoint_final.pt"))
    assert ensemble_zip.stat().st_size < 2 / 3 * originals  # weights only: no optimiser state

    fresh = tmp_path / "elsewhere"
    assert_same(predict(images, tmp_path / "z1", "-m", str(cascade_zip), "--workspace", str(fresh)), cascade)
    assert_same(predict(images, tmp_path / "z2", "-m", str(ensemble_zip), "--workspace", str(fresh)), ensemble)
    assert_same(predict(images, tmp_path / "p", "-m", str(program)), fullres)

    predictor = mambaseg.Predictor.from_model(
        ensemble_zip, workspace=fresh, mirroring=False, step=1.0, precision="float32"
    )
    for name, reference in ensemble.items():
        source = read_image(images / name.replace(".nii.gz", "_0000.nii.gz"))
        from_array = predictor.predict(source.array, spacing=source.spacing)
        assert np.array_equal(from_array.mask.array, reference)
        assert predictor.predict(source, keep_probabilities=True).probabilities.shape == (2, *reference.shape)


@pytest.mark.slow
def test_ensembling_saved_region_probabilities_paints_regions(trained, tmp_path):
    ws, _, images = trained
    runs = ws / "LargeSynthetic" / "runs"
    for run in (CASCADE, FULLRES):
        assert (
            main(
                [
                    "predict",
                    "-i",
                    str(images),
                    "-o",
                    str(tmp_path / run),
                    "-m",
                    str(runs / run),
                    *FAST,
                    "--save-probabilities",
                ]
            )
            == 0
        )
    out = tmp_path / "ensembled"
    assert main(["ensemble", "-i", str(tmp_path / CASCADE), str(tmp_path / FULLRES), "-o", str(out)]) == 0
    for mask_file in sorted(out.glob("*.nii.gz")):
        stems = [tmp_path / run / mask_file.name.replace(".nii.gz", ".npz") for run in (CASCADE, FULLRES)]
        averaged = sum(np.load(stem)["probabilities"].astype(np.float32) for stem in stems) / 2  # (whole, core)
        expected = np.where(averaged[1] > 0.5, 2, np.where(averaged[0] > 0.5, 1, 0))
        assert np.array_equal(read_image(mask_file).array, expected)
        assert np.load(stems[0])["regions_class_order"].tolist() == [1, 2]
