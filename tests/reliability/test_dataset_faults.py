"""Bad training datasets: `check` names each file and problem, `preprocess` stops before writing, inputs unchanged."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mambaseg.cli.main import main
from mambaseg.data import check_dataset, load_dataset
from tests.data.synthetic import case_arrays, file_states, write_nifti, write_nnunet_dataset

SHAPE, SPACING = (8, 10, 12), (1.0, 1.0, 2.0)


def _label(index: int = 1) -> np.ndarray:
    return case_arrays(index, SHAPE, 1, [0, 1])[1]


def missing_image(root: Path) -> str:
    (root / "imagesTr" / "case_001_0000.nii.gz").unlink()
    return "imagesTr/case_001_0000.nii.gz"


def truncated_image(root: Path) -> str:
    path = root / "imagesTr" / "case_001_0000.nii.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return "imagesTr/case_001_0000.nii.gz"


def label_of_other_shape(root: Path) -> str:
    write_nifti(root / "labelsTr" / "case_001.nii.gz", np.ones((8, 10, 11), np.uint8), SPACING)
    return "labelsTr/case_001.nii.gz"


def label_of_other_spacing(root: Path) -> str:
    write_nifti(root / "labelsTr" / "case_001.nii.gz", _label(), (1.0, 1.5, 2.0))
    return "labelsTr/case_001.nii.gz"


def label_of_other_orientation(root: Path) -> str:
    path = root / "labelsTr" / "case_001.nii.gz"
    write_nifti(path, _label(), SPACING)
    written = nib.load(str(path))
    affine = written.affine.copy()
    affine[0, 0] = -affine[0, 0]  # the x axis reversed: the same voxels, mirrored in space (LPS direction +x)
    nib.save(nib.Nifti1Image(np.asanyarray(written.dataobj), affine), str(path))
    return "labelsTr/case_001.nii.gz"


def undeclared_label(root: Path) -> str:
    label = _label()
    label[0, 0, 0] = 3
    write_nifti(root / "labelsTr" / "case_001.nii.gz", label, SPACING)
    return "labelsTr/case_001.nii.gz"


def nan_and_inf_voxels(root: Path) -> str:
    image = case_arrays(1, SHAPE, 1, [0])[0][0]
    image[1, 2, 3], image[2, 3, 4], image[3, 4, 5] = np.nan, np.inf, -np.inf
    write_nifti(root / "imagesTr" / "case_001_0000.nii.gz", image, SPACING)
    return "imagesTr/case_001_0000.nii.gz"


def mixed_2d_and_3d(root: Path) -> str:
    write_nifti(root / "imagesTr" / "case_001_0000.nii.gz", np.ones(SHAPE[1:], np.float32), SPACING[:2])
    write_nifti(root / "labelsTr" / "case_001.nii.gz", np.ones(SHAPE[1:], np.uint8), SPACING[:2])
    return "imagesTr/case_001_0000.nii.gz"


def path_outside_the_dataset(root: Path) -> str:
    outside = root.parent / "elsewhere_0000.nii.gz"
    write_nifti(outside, case_arrays(9, SHAPE, 1, [0])[0][0], SPACING)
    description = json.loads((root / "dataset.json").read_text())
    description["dataset"] = {
        f"case_{i:03d}": {"images": [f"imagesTr/case_{i:03d}_0000.nii.gz"], "label": f"labelsTr/case_{i:03d}.nii.gz"}
        for i in range(3)
    }
    description["dataset"]["case_001"]["images"] = ["../elsewhere_0000.nii.gz"]
    (root / "dataset.json").write_text(json.dumps(description))
    return "../elsewhere_0000.nii.gz"


FAULTS: dict[str, tuple[Callable[[Path], str], str]] = {
    "image_missing": (missing_image, "file not found"),
    "image_truncated": (truncated_image, "cannot be read"),
    "shape_differs": (label_of_other_shape, "shape (8, 10, 11) differs from (8, 10, 12) of the image"),
    "spacing_differs": (label_of_other_spacing, "spacing (1.0, 1.5, 2.0) differs from (1.0, 1.0, 2.0)"),
    "orientation_differs": (label_of_other_orientation, "direction (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)"),
    "undeclared_label": (undeclared_label, "label values [3] are not declared in dataset.json"),
    "nan_inf_voxels": (nan_and_inf_voxels, "3 voxels are NaN or infinite"),
    "mixed_2d_3d": (mixed_2d_and_3d, "2-D image among 3-D ones: 2-D and 3-D cases cannot be mixed"),
    "path_outside": (path_outside_the_dataset, "outside the dataset folder"),
}


def _out(capsys) -> str:
    return " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("fault", list(FAULTS))
def test_bad_dataset_is_reported_with_its_file_and_nothing_is_written(fault, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # the report table keeps each path and message on one line
    root = write_nnunet_dataset(tmp_path / "raw" / "Dataset001_Bad", n_cases=3, shape=SHAPE, spacing=SPACING)
    corrupt, message = FAULTS[fault]
    file = corrupt(root)
    before = file_states(tmp_path / "raw")

    errors = [p for p in check_dataset(load_dataset(root), max_workers=1).errors if message in p.message]
    assert [str(p.file) for p in errors] == [str(root / file)]
    assert main(["check", str(root), "--workers", "1"]) == 1
    rows = [line for line in capsys.readouterr().out.splitlines() if message in line]
    assert len(rows) == 1 and file in rows[0] and "error" in rows[0]  # files relative to the dataset folder
    workspace = tmp_path / "ws"
    assert main(["preprocess", str(root), "--workspace", str(workspace), "--workers", "1"]) == 1
    assert message in _out(capsys)
    assert not workspace.exists() or not any(workspace.rglob("*"))
    assert file_states(tmp_path / "raw") == before


def test_empty_label_is_a_warning_and_training_may_go_on(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    root = write_nnunet_dataset(tmp_path / "raw" / "Dataset001_Empty", n_cases=3, shape=SHAPE, spacing=SPACING)
    write_nifti(root / "labelsTr" / "case_001.nii.gz", np.zeros(SHAPE, np.uint8), SPACING)
    before = file_states(tmp_path / "raw")
    report = check_dataset(load_dataset(root), max_workers=1)
    assert report.ok and [(str(p.file), p.severity) for p in report.problems] == [
        (str(root / "labelsTr" / "case_001.nii.gz"), "warning")
    ]
    assert main(["check", str(root), "--workers", "1"]) == 0
    out = _out(capsys)
    assert "labelsTr/case_001.nii.gz" in out and "no foreground" in out and "0 errors, 1 warnings" in out
    assert file_states(tmp_path / "raw") == before


def test_a_declared_label_that_no_case_contains_is_a_warning_naming_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    root = write_nnunet_dataset(tmp_path / "raw" / "Dataset001_Unused", n_cases=3, shape=SHAPE, spacing=SPACING)
    description = json.loads((root / "dataset.json").read_text())
    description["labels"] = {**description["labels"], "tumour": max(description["labels"].values()) + 1}
    (root / "dataset.json").write_text(json.dumps(description))
    report = check_dataset(load_dataset(root), max_workers=1)
    assert report.ok and [(str(p.file), p.severity) for p in report.problems] == [
        (str(root / "dataset.json"), "warning")
    ]
    assert main(["check", str(root), "--workers", "1"]) == 0
    out = _out(capsys)
    assert "label 'tumour'" in out and "no training case's label map contains it" in out
