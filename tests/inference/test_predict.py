"""`mambaseg predict` on synthetic data: outputs, resuming, parts, probabilities, bad input, and geometry.

The geometry tests replace the trained networks by a fixed function (logits ``[-x, x]`` of the
normalised input), so the expected mask is known voxel for voxel: the input above the CT
normalisation's mean. Inputs are oblique, flipped and permuted NIfTI files and DICOM series.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
from torch import nn

from mambaseg.cli.main import main
from mambaseg.inference import runs
from mambaseg.inference.batch import select_part
from mambaseg.inference.inputs import InputCase, discover_cases
from mambaseg.inference.rtstruct import read_rtstruct
from mambaseg.io import Image, read_image, write_image
from tests.data.synthetic import write_nnunet_dataset
from tests.io.cases import DIRECTIONS_3D, write_dicom_series

TRAIN = ["-c", "3d_fullres", "-n", "unet_resenc", "trainer=cpu_short", "trainer.num_epochs=1"]
TRAIN += ["trainer.iterations_per_epoch=2", "trainer.val_iterations=1", "num_workers=0"]
FAST = ["--no-mirroring", "--device", "cpu"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(run folder with folds 0 and 1, folder of 3 test images in nnU-Net naming)."""
    root = tmp_path_factory.mktemp("predict")
    dataset = write_nnunet_dataset(root / "Dataset001_Tiny", n_cases=5, n_test=3, shape=(8, 12, 12), spacing=(1, 1, 1))
    for fold in ("0", "1"):
        assert main(["train", str(dataset), "--workspace", str(root / "ws"), "-f", fold, *TRAIN]) == 0
    return root / "ws" / "Synthetic" / "runs" / "3d_fullres__unet_resenc", dataset / "imagesTs"


def predict(run: Path, source: Path, out: Path, *extra: str) -> int:
    return main(["predict", "-i", str(source), "-o", str(out), "-m", str(run), *FAST, *extra])


def mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.iterdir())}


def test_predicts_a_folder_and_resumes_only_what_is_missing(trained, tmp_path):
    run, images = trained
    before = mtimes(images)
    assert predict(run, images, tmp_path / "out") == 0
    names = ["case_005.nii.gz", "case_006.nii.gz", "case_007.nii.gz"]
    assert sorted(mtimes(tmp_path / "out")) == names
    for name in names:
        mask, source = read_image(tmp_path / "out" / name), read_image(images / name.replace(".nii", "_0000.nii"))
        assert mask.same_geometry(source, tol=1e-6) and set(np.unique(mask.array)) <= {0, 1}
    first = mtimes(tmp_path / "out")
    (tmp_path / "out" / "case_006.nii.gz").unlink()
    assert predict(run, images, tmp_path / "out") == 0
    second = mtimes(tmp_path / "out")
    assert (
        second["case_005.nii.gz"] == first["case_005.nii.gz"] and second["case_007.nii.gz"] == first["case_007.nii.gz"]
    )
    assert "case_006.nii.gz" in second
    assert predict(run, images, tmp_path / "out", "--overwrite") == 0
    assert all(mtimes(tmp_path / "out")[name] > second[name] for name in names)
    assert mtimes(images) == before


def test_parts_take_every_kth_case_and_default_to_torchrun(trained, tmp_path, monkeypatch):
    run, images = trained
    assert predict(run, images, tmp_path / "a", "--num-parts", "2", "--part-id", "1") == 0
    assert sorted(mtimes(tmp_path / "a")) == ["case_006.nii.gz"]
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert predict(run, images, tmp_path / "b") == 0
    assert sorted(mtimes(tmp_path / "b")) == ["case_005.nii.gz", "case_007.nii.gz"]
    cases = [InputCase(name, (Path(name),), "files") for name in "edcba"]
    assert [c.name for c in select_part(cases, 3, 0)] == ["a", "d"]


def test_probabilities_are_float16_with_a_sidecar_and_match_the_mask(trained, tmp_path):
    run, images = trained
    assert predict(run, images / "case_005_0000.nii.gz", tmp_path, "--save-probabilities", "-f", "0", "1") == 0
    probabilities = np.load(tmp_path / "case_005_0000.npz")["probabilities"]
    mask = read_image(tmp_path / "case_005_0000.nii.gz")
    sidecar = json.loads((tmp_path / "case_005_0000.json").read_text())
    assert probabilities.dtype == np.float16 and probabilities.shape == (2, *mask.array.shape)
    np.testing.assert_allclose(probabilities.astype(np.float32).sum(0), 1, atol=2e-3)
    assert sidecar["classes"] == ["background", "foreground"] and sidecar["shape"] == list(mask.array.shape)
    confident = np.abs(probabilities[1].astype(np.float32) - 0.5) > 1e-2
    np.testing.assert_array_equal((probabilities[1] > 0.5)[confident], mask.array.astype(bool)[confident])


def test_statistics_measure_each_predicted_mask_and_the_table_survives_a_resumed_run(trained, tmp_path):
    run, images = trained
    assert predict(run, images, tmp_path, "--statistics", "--num-parts", "2", "--part-id", "0") == 0
    assert predict(run, images, tmp_path, "--statistics") == 0  # the rest, then the table of every case
    rows = (tmp_path / "statistics.csv").read_text().splitlines()
    cases = sorted(path.name.removesuffix(".nii.gz") for path in tmp_path.glob("*.nii.gz"))
    assert len(cases) == 3 and len(rows) == 1 + len(cases)  # a header, one structure (foreground) per case
    for case in cases:
        mask = read_image(tmp_path / f"{case}.nii.gz")
        image = read_image(images / f"{case}_0000.nii.gz")
        statistics = json.loads((tmp_path / f"{case}_statistics.json").read_text())
        (structure,) = statistics["prediction"]["structures"]
        inside = mask.array == 1
        assert structure["name"] == "foreground" and structure["voxels"] == int(inside.sum())
        assert structure["volume_ml"] == pytest.approx(inside.sum() * np.prod(mask.spacing) / 1000)
        if inside.any():
            assert structure["intensity"][0]["mean"] == pytest.approx(float(image.array[inside].mean()), rel=1e-5)


def test_discovers_channel_groups_single_files_and_dicom_series(tmp_path):
    image = Image(np.ones((3, 4, 5), np.int16), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    for name in ("b_0001.nii.gz", "b_0000.nii.gz", "a_0000.nrrd"):
        write_image(image, tmp_path / "grouped" / name)
    for name in ("scan.nii.gz", "other_0000.mha"):
        write_image(image, tmp_path / "single" / name)
    grouped = discover_cases(tmp_path / "grouped")
    assert [(c.name, [p.name for p in c.sources]) for c in grouped] == [
        ("a", ["a_0000.nrrd"]),
        ("b", ["b_0000.nii.gz", "b_0001.nii.gz"]),
    ]
    assert [c.name for c in discover_cases(tmp_path / "single")] == ["other_0000", "scan"]
    write_dicom_series(image, tmp_path / "many" / "p1", "1.2.3.1")
    write_dicom_series(image, tmp_path / "many" / "p2", "1.2.3.2")
    write_dicom_series(image, tmp_path / "many" / "p2", "1.2.3.3", prefix="x")
    cases = discover_cases(tmp_path / "many")
    assert [(c.name, c.kind, c.series_uid) for c in cases] == [
        ("1.2.3.2", "dicom", "1.2.3.2"),
        ("1.2.3.3", "dicom", "1.2.3.3"),
        ("p1", "dicom", "1.2.3.1"),
    ]
    assert [c.name for c in discover_cases(tmp_path / "many", series_uid="1.2.3.3")] == ["p2"]


def _error(capsys) -> str:
    return " ".join(capsys.readouterr().out.split())


def test_bad_input_is_refused_with_a_clear_error_and_nothing_written(trained, tmp_path, capsys):
    run, images = trained
    source = tmp_path / "in"
    source.mkdir()
    (tmp_path / "link").symlink_to(source)
    assert predict(run, source, tmp_path / "link" / "out") == 1
    assert "inside the input" in _error(capsys)
    assert predict(run, source, source) == 1
    assert "is the input" in _error(capsys)
    (source / "notes.txt").write_text("no images")
    assert predict(run, source, tmp_path / "out") == 1
    assert "nothing to predict" in _error(capsys)
    for channel in ("0000", "0001"):
        write_image(read_image(images / "case_005_0000.nii.gz"), source / f"case_{channel}.nii.gz")
    assert predict(run, source, tmp_path / "out") == 1
    assert "case 'case'" in _error(capsys)
    assert predict(run.parent / "3d_fullres__missing", images, tmp_path / "out") == 1
    assert "no such run folder" in _error(capsys)
    assert predict(run, images, tmp_path / "out", "-f", "7") == 1
    assert "fold_7/checkpoint_final.pt: no such checkpoint" in _error(capsys)
    assert predict(run / "fold_0", images, tmp_path / "out") == 1
    assert "pass its parent" in _error(capsys)
    assert sorted(os.listdir(source)) == ["case_0000.nii.gz", "case_0001.nii.gz", "notes.txt"]
    assert not (tmp_path / "out").exists() and not (source / "out").exists()


class ThresholdNet(nn.Module):
    """Logits ``10 * [-x, x]``: the mask is the normalised input above 0, voxel for voxel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 10 * torch.cat([-x, x], dim=1)


@pytest.fixture
def threshold_run(trained, monkeypatch) -> Path:
    monkeypatch.setattr(runs, "load_model", lambda run, checkpoint, device: ThresholdNet())
    return trained[0]


def _volume(direction: np.ndarray, seed: int) -> Image:
    """Odd integers in [-199, 199] (none at the CT normalisation's mean, -0.7): above it means positive."""
    values = np.random.default_rng(seed).integers(-100, 100, size=(10, 15, 13)) * 2 + 1
    return Image(values.astype(np.int16), (1.0, 1.0, 1.0), (-12.25, 30.5, -7.125), tuple(direction.ravel()))


def _assert_same_geometry(mask: sitk.Image, source: sitk.Image, tol: float) -> None:
    assert mask.GetSize() == source.GetSize()
    for get in (sitk.Image.GetSpacing, sitk.Image.GetOrigin, sitk.Image.GetDirection):
        np.testing.assert_allclose(get(mask), get(source), atol=tol)


@pytest.mark.parametrize("direction", ["flipped", "flipped_twice", "permuted", "oblique", "oblique_reflected"])
def test_nifti_masks_equal_the_thresholded_input_in_its_geometry(threshold_run, tmp_path, direction):
    source = tmp_path / "in" / "scan.nii.gz"
    write_image(_volume(DIRECTIONS_3D[direction], seed=1), source)
    assert predict(threshold_run, source.parent, tmp_path / "out") == 0
    expected, mask = sitk.ReadImage(str(source)), sitk.ReadImage(str(tmp_path / "out" / "scan.nii.gz"))
    _assert_same_geometry(mask, expected, 1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mask), sitk.GetArrayFromImage(expected) > 0)


def _sitk_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


@pytest.mark.parametrize("direction", ["flipped_twice", "oblique", "oblique_reflected"])
def test_dicom_masks_and_dicom_seg_follow_the_source_slices(threshold_run, tmp_path, direction):
    folder = tmp_path / "in" / "series"
    files = write_dicom_series(_volume(DIRECTIONS_3D[direction], seed=2), folder, "1.2.826.0.1.3680043.8.498.77")
    assert predict(threshold_run, folder.parent, tmp_path / "out", "--dicom-seg") == 0
    expected, mask = _sitk_series(folder), sitk.ReadImage(str(tmp_path / "out" / "series.nii.gz"))
    _assert_same_geometry(mask, expected, 1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mask), sitk.GetArrayFromImage(expected) > 0)
    seg = hd.seg.segread(tmp_path / "out" / "series.dcm")
    for file in files:
        instance = pydicom.dcmread(file)
        frame = seg.get_pixels_by_source_instance([instance.SOPInstanceUID], segment_numbers=[1])  # (1, y, x, 1)
        values = instance.pixel_array * float(instance.get("RescaleSlope", 1)) + float(
            instance.get("RescaleIntercept", 0)
        )
        np.testing.assert_array_equal(frame[0, ..., 0], values > 0, err_msg=file.name)


def test_rtstruct_and_statistics_of_a_dicom_series_match_its_nifti_mask(threshold_run, tmp_path):
    folder = tmp_path / "in" / "series"
    files = write_dicom_series(_volume(DIRECTIONS_3D["oblique"], seed=3), folder, "1.2.826.0.1.3680043.8.498.78")
    assert predict(threshold_run, folder.parent, tmp_path / "out", "--rtstruct", "--statistics") == 0
    mask = read_image(tmp_path / "out" / "series.nii.gz")
    structures = read_rtstruct(tmp_path / "out" / "series_rtstruct.dcm", mask)
    inside = mask.array == 1
    dice = 2 * (structures["foreground"] & inside).sum() / (structures["foreground"].sum() + inside.sum())
    assert dice >= 0.95
    referenced = {
        item.ReferencedSOPInstanceUID
        for roi in pydicom.dcmread(tmp_path / "out" / "series_rtstruct.dcm").ROIContourSequence
        for contour in roi.ContourSequence
        for item in contour.ContourImageSequence
    }
    assert referenced and referenced <= {pydicom.dcmread(file).SOPInstanceUID for file in files}
    statistics = json.loads((tmp_path / "out" / "series_statistics.json").read_text())
    assert statistics["prediction"]["structures"][0]["voxels"] == int(inside.sum())
    assert (tmp_path / "out" / "statistics.csv").read_text().count("\nseries,") == 1


def test_a_2d_image_given_to_a_3d_model_is_refused_naming_the_file(trained, tmp_path, capsys):
    run, _ = trained
    flat = tmp_path / "in" / "slice.nii.gz"
    write_image(Image(np.zeros((12, 12), np.float32), (1.0, 1.0), (0.0, 0.0), (1.0, 0.0, 0.0, 1.0)), flat)
    capsys.readouterr()
    assert predict(run, flat, tmp_path / "out") == 1
    shown = " ".join(capsys.readouterr().out.split())
    assert f"{flat}: a 2-D image of shape (12, 12); the model was trained on 3-D images" in shown
    assert not (tmp_path / "out" / "slice.nii.gz").exists()
