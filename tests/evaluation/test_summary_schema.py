"""One summary.json schema for `evaluate` and for a fold's validation: JSON null for NaN, written atomically."""

import json
import os

import numpy as np
import pytest

from mambaseg.evaluation.summary import (
    SCHEMA_VERSION,
    CasePair,
    EvaluationError,
    evaluate_cases,
    evaluate_folders,
    write_summary,
)
from mambaseg.io import Image, read_image
from mambaseg.workspace.layout import EvaluationFiles
from tests.data.synthetic import write_nifti

EYE = tuple(np.eye(3).ravel())
KEYS = {
    "schema_version",
    "prediction",
    "reference",
    "labels",
    "label_names",
    "metrics",
    "tolerance_mm",
    "cases",
    "mean",
    "foreground_mean",
    "unmatched_predictions",
}


def _files(folder):
    files = EvaluationFiles.in_folder(folder)
    return files.summary, files.table


def _mask(value_box=None, shape=(6, 8, 8)) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    if value_box:
        value, box = value_box
        mask[box] = value
    return mask


@pytest.fixture
def folders(tmp_path):
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    write_nifti(ref / "a.nii.gz", _mask((1, np.s_[1:5, 2:6, 2:6])))
    write_nifti(pred / "a.nii.gz", _mask((1, np.s_[1:5, 2:6, 3:7])))
    write_nifti(ref / "b.nii.gz", _mask((2, np.s_[1:5, 2:6, 2:6])))
    write_nifti(pred / "b.nii.gz", _mask())
    return pred, ref


def _strict_json(path):
    def refuse(constant):
        raise AssertionError(f"{path} holds {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_validation_from_images_in_memory_gives_evaluates_schema_with_null_for_nan(folders, tmp_path):
    pred, ref = folders
    pairs = [CasePair(name, read_image(pred / f"{name}.nii.gz"), ref / f"{name}.nii.gz") for name in ("a", "b")]
    summary = evaluate_cases(pairs, [1, 2, 3], label_names={1: "left", 2: "right", 3: "absent"}, metrics=["dice"])
    json_path, _ = _files(tmp_path / "validation")
    write_summary(summary, *_files(tmp_path / "validation"))
    written = _strict_json(json_path)
    assert set(written) == KEYS and written["schema_version"] == SCHEMA_VERSION == 2
    assert written["metrics"] == ["dice"] and written["label_names"] == {"1": "left", "2": "right", "3": "absent"}
    assert written["cases"]["a"]["prediction_file"] == str(pred / "a.nii.gz")
    assert written["cases"]["a"]["metrics"]["1"] == {"dice": pytest.approx(0.75), "n_pred": 64, "n_ref": 64}
    assert written["cases"]["a"]["metrics"]["2"] == {"dice": None, "n_pred": 0, "n_ref": 0}
    assert written["mean"] == {"1": {"dice": pytest.approx(0.75)}, "2": {"dice": 0.0}, "3": {"dice": None}}
    assert written["foreground_mean"] == {"dice": pytest.approx(0.375)}
    assert (tmp_path / "validation" / "metrics.csv").read_text().splitlines()[0] == "case,label,dice,n_pred,n_ref"


def test_evaluate_and_validation_write_the_same_summary_for_the_same_masks(folders, tmp_path):
    pred, ref = folders
    from_folders = evaluate_folders(pred, ref, [1, 2])
    pairs = [CasePair(name, read_image(pred / f"{name}.nii.gz"), ref / f"{name}.nii.gz") for name in ("a", "b")]
    from_images = evaluate_cases(pairs, [1, 2], prediction=pred, reference=ref)
    write_summary(from_folders, *_files(tmp_path / "evaluate"))
    write_summary(from_images, *_files(tmp_path / "validate"))
    assert _strict_json(tmp_path / "evaluate" / "summary.json") == _strict_json(tmp_path / "validate" / "summary.json")
    assert from_folders["metrics"] == ["dice", "hd95", "nsd"]


def test_a_failed_summary_write_keeps_the_previous_summary(folders, tmp_path, monkeypatch):
    pred, ref = folders
    out = tmp_path / "out"
    write_summary(evaluate_folders(pred, ref, [1]), *_files(out))
    before = (out / "summary.json").read_bytes()

    def crash(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="rename failed"):
        write_summary(evaluate_folders(pred, ref, [1, 2]), *_files(out))
    monkeypatch.undo()
    assert (out / "summary.json").read_bytes() == before
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []


def test_images_of_another_grid_or_unknown_metrics_are_refused(folders):
    pred, ref = folders
    shifted = Image(_mask(), (1.0, 1.0, 1.0), (0.0, 0.0, 0.5), EYE, source="shifted.nii.gz")
    with pytest.raises(EvaluationError, match="shifted.nii.gz: origin .* differs from .* of the reference"):
        evaluate_cases([CasePair("b", shifted, ref / "b.nii.gz")], [2])
    with pytest.raises(ValueError, match="choose one or more of dice, hd95, nsd"):
        evaluate_folders(pred, ref, [1], metrics=["dice", "hd99"])
