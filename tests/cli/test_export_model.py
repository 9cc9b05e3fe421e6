"""`mambaseg export-model` then `mambaseg predict -m MODEL.zip` in a fresh workspace, elsewhere.

Two tiny runs (3d_fullres and 2d) of a synthetic dataset are trained and ranked by find-best; the exported
zip, copied to another folder and predicted with from a new workspace, gives the masks of ``predict -d``
(and a zip of one run those of ``predict -m RUN``), voxel for voxel. A DICOM series predicted from the zip
gets a DICOM-SEG whose segments carry the dataset's label names and the codes of ``--segment-codes``.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest

from mambaseg.cli.main import main
from mambaseg.io import Image, read_image
from tests.data.synthetic import write_nnunet_dataset
from tests.io.cases import DIRECTIONS_3D, write_dicom_series

LABELS = {"background": 0, "left": 1, "right": 2}
TRAIN = ["-n", "unet_resenc", "-f", "0", "trainer=cpu_short", "trainer.num_epochs=1"]
TRAIN += ["trainer.iterations_per_epoch=2", "trainer.val_iterations=1", "num_workers=0"]
FAST = ["--no-mirroring", "--device", "cpu"]
CASES = ("case_005", "case_006")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(workspace with a 3d_fullres and a 2d run and find-best's instructions, folder of 2 test images)."""
    root = tmp_path_factory.mktemp("export")
    dataset = write_nnunet_dataset(
        root / "Dataset001_Tiny", n_cases=5, n_test=2, shape=(8, 12, 12), spacing=(1, 1, 1), labels=LABELS
    )
    ws = root / "ws"
    for configuration in ("3d_fullres", "2d"):
        assert main(["train", str(dataset), "--workspace", str(ws), "-c", configuration, *TRAIN]) == 0
    assert main(["find-best", str(dataset), "--workspace", str(ws), "--folds", "0"]) == 0
    return ws, dataset / "imagesTs"


def predict(source: Path, out: Path, *model: str) -> int:
    return main(["predict", "-i", str(source), "-o", str(out), *model, *FAST])


def masks(folder: Path) -> dict[str, np.ndarray]:
    return {case: read_image(folder / f"{case}.nii.gz").array for case in CASES}


@pytest.mark.slow
def test_a_zip_predicts_in_a_fresh_workspace_what_the_run_folders_predict(trained, tmp_path, capsys):
    ws, images = trained
    zipped = tmp_path / "model.zip"
    assert main(["export-model", "Synthetic", str(zipped), "--workspace", str(ws)]) == 0
    instructions = json.loads((ws / "Synthetic" / "inference_instructions.json").read_text())
    runs = instructions["runs"]  # find-best's choice: one run or an ensemble of both
    expected = [f"{run}/fold_0/{name}" for run in runs for name in ("checkpoint_final.pt", "plan.json")]
    expected += ["Synthetic/dataset.json", "Synthetic/inference_instructions.json"]
    assert f"exported {len(runs)} run(s), {len(expected)} files, " in capsys.readouterr().out.replace("\n", "")
    with zipfile.ZipFile(zipped) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        names = sorted(archive.namelist())
        assert json.loads(archive.read("Synthetic/dataset.json"))["labels"] == LABELS
    assert manifest["runs"] == [{"run": run, "folds": ["0"]} for run in runs]
    assert manifest["source"] == "inference_instructions"
    assert manifest["postprocessing"] == instructions["postprocessing"] and manifest["mambaseg_version"] == "0.1.0"
    assert sorted(manifest["files"]) == sorted(expected) and names == sorted([*expected, "manifest.json"])

    elsewhere = tmp_path / "hospital"
    elsewhere.mkdir()
    shutil.copy(zipped, elsewhere / "model.zip")
    fresh = elsewhere / "ws"
    assert predict(images, tmp_path / "from_zip", "-m", str(elsewhere / "model.zip"), "--workspace", str(fresh)) == 0
    assert predict(images, tmp_path / "from_runs", "-d", "Synthetic", "--workspace", str(ws)) == 0
    from_zip, from_runs = masks(tmp_path / "from_zip"), masks(tmp_path / "from_runs")
    for case in CASES:
        assert np.array_equal(from_zip[case], from_runs[case]), case
    extracted = list((fresh / "exported_models").iterdir())
    assert [p.name[: len("model-")] for p in extracted] == ["model-"] and not (fresh / "Synthetic").exists()
    # a second prediction reuses the extracted copy
    assert predict(images, tmp_path / "again", "-m", str(elsewhere / "model.zip"), "--workspace", str(fresh)) == 0
    assert list((fresh / "exported_models").iterdir()) == extracted


@pytest.mark.slow
def test_a_zip_of_named_runs_predicts_as_the_run_folder(trained, tmp_path):
    ws, images = trained
    zipped = tmp_path / "two.zip"
    runs = ["2d__unet_resenc", "3d_fullres__unet_resenc"]
    assert main(["export-model", "Synthetic", str(zipped), "--workspace", str(ws), "--runs", runs[0]]) == 0
    fresh = tmp_path / "fresh"
    assert predict(images, tmp_path / "from_zip", "-m", str(zipped), "--workspace", str(fresh)) == 0
    assert predict(images, tmp_path / "from_run", "-m", str(ws / "Synthetic" / "runs" / runs[0])) == 0
    from_zip, from_run = masks(tmp_path / "from_zip"), masks(tmp_path / "from_run")
    for case in CASES:
        assert np.array_equal(from_zip[case], from_run[case]), case
    assert main(["export-model", "Synthetic", str(tmp_path / "both.zip"), "--workspace", str(ws), "--runs", *runs]) == 0
    with zipfile.ZipFile(tmp_path / "both.zip") as archive:
        manifest = json.loads(archive.read("manifest.json"))
    assert [entry["run"] for entry in manifest["runs"]] == [f"Synthetic/runs/{run}" for run in runs]
    assert manifest["source"] == "runs" and manifest["postprocessing"] == []


@pytest.mark.slow
def test_errors_name_the_option_and_the_zip(trained, tmp_path, capsys):
    ws, images = trained
    zipped = tmp_path / "best.zip"
    assert main(["export-model", "Synthetic", str(zipped), "--workspace", str(ws), "--folds", "0"]) == 1
    assert "--folds 0: the inference instructions choose them; give --runs too" in capsys.readouterr().out
    assert main(["export-model", "Other", str(zipped), "--workspace", str(ws)]) == 1
    assert "no dataset 'Other' in the workspace (trained datasets: Synthetic)" in capsys.readouterr().out
    folder_form = tmp_path / "by_folder.zip"  # the dataset's folder, as every command takes it
    assert main(["export-model", str(images.parent), str(folder_form), "--workspace", str(ws)]) == 0
    with zipfile.ZipFile(folder_form) as archive:
        assert json.loads(archive.read("manifest.json"))["dataset"] == "Synthetic"
    capsys.readouterr()
    assert main(["export-model", "Synthetic", str(zipped), "--workspace", str(ws), "--checkpoint", "best"]) == 0
    assert predict(images, tmp_path / "out", "-m", str(zipped), "--workspace", str(tmp_path / "w"), "-f", "0") == 1
    assert "an exported model predicts with the folds it holds" in capsys.readouterr().out
    code = predict(
        images, tmp_path / "out", "-m", str(zipped), "--workspace", str(tmp_path / "w"), "--checkpoint", "final"
    )
    assert code == 1
    assert f"{zipped}: holds the best checkpoints, not checkpoint 'final'" in " ".join(capsys.readouterr().out.split())


@pytest.mark.slow
def test_dicom_seg_from_a_zip_carries_label_names_and_segment_codes(trained, tmp_path, capsys):
    ws, _ = trained
    zipped = tmp_path / "model.zip"
    assert (
        main(["export-model", "Synthetic", str(zipped), "--workspace", str(ws), "--runs", "3d_fullres__unet_resenc"])
        == 0
    )
    values = np.random.default_rng(3).integers(-100, 100, size=(8, 12, 12)).astype(np.int16)
    series = tmp_path / "in" / "series"
    write_dicom_series(
        Image(values, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(DIRECTIONS_3D["identity"].ravel())),
        series,
        "1.2.826.0.1.3680043.8.498.91",
    )
    codes = tmp_path / "codes.json"
    codes.write_text(
        json.dumps(
            {"right": {"category": ["SCT", "123037004", "Anatomical Structure"], "type": ["SCT", "64033007", "Kidney"]}}
        )
    )
    fresh = ["--workspace", str(tmp_path / "w")]
    args = ["-m", str(zipped), *fresh, "--dicom-seg", "--segment-codes", str(codes)]
    assert predict(series.parent, tmp_path / "out", *args) == 0
    seg = pydicom.dcmread(tmp_path / "out" / "series.dcm")
    segments = {int(s.SegmentNumber): s for s in seg.SegmentSequence}
    assert {k: s.SegmentLabel for k, s in segments.items()} == {1: "left", 2: "right"}
    right = segments[2]
    assert (
        right.SegmentedPropertyTypeCodeSequence[0].CodeValue,
        right.SegmentedPropertyTypeCodeSequence[0].CodeMeaning,
    ) == ("64033007", "Kidney")
    assert right.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "123037004"
    assert segments[1].SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Tissue"
    codes.write_text(
        json.dumps(
            {"liver": {"category": ["SCT", "123037004", "Anatomical Structure"], "type": ["SCT", "10200004", "Liver"]}}
        )
    )
    assert predict(series.parent, tmp_path / "out2", *args) == 1
    assert f"{codes}: label 'liver' is not a label of the model (its labels: left, right)" in " ".join(
        capsys.readouterr().out.split()
    )
    assert predict(series.parent, tmp_path / "out2", "-m", str(zipped), *fresh, "--segment-codes", str(codes)) == 1
    assert "--segment-codes" in capsys.readouterr().out and not (tmp_path / "out2").exists()
