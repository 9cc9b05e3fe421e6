"""Artifacts that know what they were made from: preprocessed cases against their sources."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from mambaseg.cli.main import main
from mambaseg.data.splits import make_splits
from mambaseg.preprocessing import load_case
from tests.data.synthetic import file_states, read_nifti_array, write_nifti, write_nnunet_dataset

SHORT = [
    "trainer=cpu_short",
    "trainer.num_epochs=1",
    "trainer.iterations_per_epoch=1",
    "trainer.val_iterations=1",
    "num_workers=0",
]


def _dataset(tmp_path, shape=(8, 10, 12), spacing=(1.0, 1.0, 2.0)):
    return write_nnunet_dataset(tmp_path / "Dataset001_Tiny", n_cases=5, shape=shape, spacing=spacing)


def _invert_label(root, name, spacing):
    """The label of ``name`` with foreground and background swapped: the same files, other content."""
    path = root / "labelsTr" / f"{name}.nii.gz"
    inverted = (1 - read_nifti_array(path)).astype(np.uint8)
    write_nifti(path, inverted, spacing)
    return inverted


def test_preprocess_redoes_a_case_whose_label_changed_and_says_so(tmp_path, capsys, caplog):
    root = _dataset(tmp_path)
    argv = ["preprocess", str(root), "--workspace", str(tmp_path / "ws"), "-c", "3d_fullres", "--workers", "1"]
    assert main(argv) == 0
    capsys.readouterr()
    _invert_label(root, "case_001", (1.0, 1.0, 2.0))
    before = file_states(root)
    with caplog.at_level(logging.WARNING):
        assert main(argv) == 0
    assert "3d_fullres: 1 cases preprocessed (1 again: their sources or plan changed), 4 already done" in (
        capsys.readouterr().out
    )
    assert "case case_001 is preprocessed again: labelsTr/case_001.nii.gz changed" in caplog.text
    assert file_states(root) == before


@pytest.mark.slow
def test_train_after_a_label_changed_trains_on_the_new_label(tmp_path, caplog):
    spacing = (1.0, 1.0, 1.0)  # no resampling and no transpose: the preprocessed seg is the label itself
    root = _dataset(tmp_path, shape=(8, 12, 12), spacing=spacing)
    workspace = tmp_path / "ws"
    assert main(["preprocess", str(root), "--workspace", str(workspace), "-c", "3d_fullres", "--workers", "1"]) == 0
    folder = workspace / "Synthetic" / "preprocessed" / "3d_fullres"
    old = load_case(folder, "case_002").seg[0]
    new = _invert_label(root, "case_002", spacing)
    assert not np.array_equal(old, new)
    args = ["train", str(root), "--workspace", str(workspace), "-c", "3d_fullres", "-n", "unet_resenc", "-f", "0"]
    with caplog.at_level(logging.WARNING):
        assert main([*args, "--workers", "1", *SHORT]) == 0
    assert "case case_002 is preprocessed again: labelsTr/case_002.nii.gz changed" in caplog.text
    np.testing.assert_array_equal(load_case(folder, "case_002").seg[0], new)
    assert (workspace / "Synthetic" / "runs" / "3d_fullres__unet_resenc" / "fold_0" / "checkpoint_final.pt").is_file()


def _train_args(root, workspace, fold="0"):
    args = ["train", str(root), "--workspace", str(workspace), "-c", "3d_fullres", "-n", "unet_resenc", "-f", fold]
    return [*args, "--workers", "1", *SHORT]


@pytest.mark.slow
def test_a_case_added_after_the_splits_is_named_in_a_warning(tmp_path, caplog):
    root = _dataset(tmp_path)
    workspace = tmp_path / "ws"
    assert main(_train_args(root, workspace)) == 0
    splits = (workspace / "Synthetic" / "splits.json").read_text()
    write_nnunet_dataset(tmp_path / "more", n_cases=6)
    for source in (tmp_path / "more").rglob("case_005*"):
        target = root / source.relative_to(tmp_path / "more")
        target.write_bytes(source.read_bytes())
    with caplog.at_level(logging.WARNING):
        assert main(_train_args(root, workspace, "1")) == 0
    assert "1 case(s) of the dataset are in no fold and will be neither trained on nor validated: case_005" in (
        caplog.text
    )
    assert (workspace / "Synthetic" / "splits.json").read_text() == splits


def test_a_case_removed_after_the_splits_is_refused_naming_the_file_and_the_case(tmp_path, capsys):
    root = _dataset(tmp_path)
    workspace = tmp_path / "ws"
    assert main(["preprocess", str(root), "--workspace", str(workspace), "-c", "3d_fullres", "--workers", "1"]) == 0
    splits = workspace / "Synthetic" / "splits.json"
    splits.write_text(json.dumps(make_splits([f"case_{index:03d}" for index in range(5)])))
    (root / "imagesTr" / "case_004_0000.nii.gz").unlink()
    (root / "labelsTr" / "case_004.nii.gz").unlink()
    before = file_states(workspace)
    assert main(_train_args(root, workspace)) == 1
    out = capsys.readouterr().out
    assert f"error: {splits}: names 1 case(s) the dataset does not have: case_004; delete splits.json" in (
        " ".join(out.split())
    )
    assert not (workspace / "Synthetic" / "runs").exists()
    assert file_states(workspace) == before
