"""`mambaseg evaluate` and `mambaseg find-best` on small NIfTI files."""

import csv
import json

import numpy as np
import pytest

from mambaseg.cli.main import main
from tests.data.synthetic import write_nifti
from tests.evaluation.workspace import make_dataset, shrunk, with_blob, write_run, write_splits


def cube(shape=(6, 8, 8), box=(slice(1, 5), slice(2, 6), slice(2, 6)), value=1):
    mask = np.zeros(shape, np.uint8)
    mask[box] = value
    return mask


@pytest.fixture
def folders(tmp_path):
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    write_nifti(ref / "a.nii.gz", cube())  # label 1: 64 voxels
    write_nifti(pred / "a.nii.gz", cube(box=(slice(1, 5), slice(2, 6), slice(3, 7))))  # shifted one voxel in x
    write_nifti(ref / "b.nii.gz", cube(value=2))
    write_nifti(pred / "b.nii.gz", np.zeros((6, 8, 8), np.uint8))  # label 2 missed
    return pred, ref


def test_evaluate_writes_summary_and_csv(folders, tmp_path, capsys):
    pred, ref = folders
    write_nifti(pred / "extra.nii.gz", cube())
    out = tmp_path / "out"
    assert main(["evaluate", str(pred), str(ref), "-o", str(out), "--workers", "1", "--tolerance-mm", "1"]) == 0
    assert "extra.nii.gz: no reference" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["labels"] == [1, 2]
    a = summary["cases"]["a"]["metrics"]
    assert a["1"]["dice"] == pytest.approx(2 * 48 / 128) and a["1"]["hd95"] == pytest.approx(1.0)
    assert a["1"]["nsd"] == pytest.approx(1.0)
    assert a["2"] == {"dice": None, "hd95": None, "nsd": None, "n_pred": 0, "n_ref": 0}  # absent: not scored
    b = summary["cases"]["b"]["metrics"]
    assert b["2"]["dice"] == 0.0 and b["2"]["nsd"] == 0.0
    assert b["2"]["hd95"] == pytest.approx(np.sqrt(6**2 + 8**2 + 8**2))  # the image diagonal
    assert summary["mean"]["1"]["dice"] == pytest.approx(0.75)  # case b leaves label 1 out
    assert summary["foreground_mean"]["dice"] == pytest.approx(0.375)
    assert summary["unmatched_predictions"] == [str(pred / "extra.nii.gz")]
    with open(out / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [(row["case"], row["label"]) for row in rows] == [("a", "1"), ("a", "2"), ("b", "1"), ("b", "2")]
    assert float(rows[0]["dice"]) == pytest.approx(0.75) and rows[1]["dice"] == ""


def test_evaluate_two_files_and_chosen_labels(folders, tmp_path):
    pred, ref = folders
    assert main(["evaluate", str(pred / "a.nii.gz"), str(ref / "a.nii.gz"), "--labels", "1", "--workers", "1"]) == 0
    summary = json.loads((pred / "summary.json").read_text())
    assert list(summary["cases"]) == ["a"] and summary["labels"] == [1]


def test_evaluate_missing_prediction_is_an_error_naming_the_file(folders, capsys):
    pred, ref = folders
    (pred / "b.nii.gz").unlink()
    assert main(["evaluate", str(pred), str(ref), "--workers", "1"]) == 1
    assert f"{pred / 'b.nii.gz'}: no prediction" in capsys.readouterr().out.replace("\n", "")


def test_evaluate_geometry_mismatch_is_an_error_naming_the_file(folders, capsys):
    pred, ref = folders
    write_nifti(pred / "b.nii.gz", np.zeros((6, 8, 8), np.uint8), spacing=(1.0, 1.0, 2.5))
    assert main(["evaluate", str(pred), str(ref), "--workers", "1"]) == 1
    out = capsys.readouterr().out.replace("\n", "")
    assert "b.nii.gz: spacing" in out and "2.5" in out


def test_find_best_prints_the_ranking_and_writes_instructions(tmp_path, capsys):
    workspace = tmp_path / "ws"
    root = make_dataset(workspace)
    write_splits(workspace)
    write_run(workspace, root, "3d_fullres__unet", with_blob)
    write_run(workspace, root, "2d__unet", shrunk)
    assert main(["find-best", "Dataset001_Synthetic", "--workspace", str(workspace)]) == 0
    out = capsys.readouterr().out
    assert out.index("3d_fullres__unet") < out.index("2d__unet")
    assert "keep the largest component of liver, tumour together" in out
    assert "no validation probabilities" in out
    instructions = json.loads((workspace / "Synthetic" / "inference_instructions.json").read_text())
    assert instructions["runs"] == ["Synthetic/runs/3d_fullres__unet"]


def test_find_best_without_runs_fails_clearly(tmp_path, capsys):
    root = make_dataset(tmp_path)
    write_splits(tmp_path / "ws")
    assert main(["find-best", str(root), "--workspace", str(tmp_path / "ws")]) == 1  # the dataset given by path
    assert "no run with a validated fold" in capsys.readouterr().out
