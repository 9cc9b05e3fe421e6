import pytest

from mambaseg.data import load_dataset
from mambaseg.evaluation.cross_validation import SelectionError, select_folds
from mambaseg.inference.postprocessing import keep_largest_component_step, load_instructions
from mambaseg.workspace import Workspace, find_best
from tests.evaluation.workspace import make_dataset, shrunk, with_blob, write_run, write_splits

BLOB_DICE = 2 * 144 / (144 + 152)  # label 1: 144 voxels, predicted with 8 more
SHRUNK_DICE = 2 * 96 / (96 + 144)  # each label keeps 4 of its 6 rows


@pytest.fixture
def setup(tmp_path):
    workspace = tmp_path / "ws"
    root = make_dataset(workspace)
    write_splits(workspace)
    return workspace, root


def test_find_best_ranks_runs_and_chooses_postprocessing(setup):
    workspace, root = setup
    write_run(workspace, root, "3d_fullres__unet", with_blob, probabilities=True)
    write_run(workspace, root, "2d__unet", shrunk, probabilities=True)
    write_run(workspace, root, "3d_lowres__unet", shrunk, folds=(0,))
    instructions = find_best(load_dataset(root), workspace)

    assert instructions.runs == ["Synthetic/runs/3d_fullres__unet"] and instructions.folds == [0, 1]
    ranking = [(entry["candidate"], entry["mean_dice"]) for entry in instructions.ranking]
    # the ensemble's average of one-hot masks ties where they differ: background wins, as in the shrunk run;
    # on equal scores the single run ranks first
    assert ranking == [
        ("3d_fullres__unet", pytest.approx((BLOB_DICE + 1) / 2)),
        ("2d__unet", pytest.approx(SHRUNK_DICE)),
        ("2d__unet + 3d_fullres__unet", pytest.approx(SHRUNK_DICE)),
    ]
    assert instructions.skipped == [{"candidate": "3d_lowres__unet", "reason": "folds [1] not validated"}]
    assert instructions.postprocessing == [keep_largest_component_step([1, 2], jointly=True)]
    assert instructions.cross_validation["mean_dice_postprocessed"] == pytest.approx(1.0)
    loaded = load_instructions(Workspace(workspace).dataset("Synthetic").instructions)
    assert loaded == instructions


def test_no_postprocessing_when_it_does_not_help_and_ensembles_need_probabilities(setup):
    workspace, root = setup
    write_run(workspace, root, "3d_fullres__unet", shrunk)
    write_run(workspace, root, "2d__unet", with_blob, probabilities=True)
    instructions = find_best(load_dataset(root), workspace)
    assert instructions.runs == ["Synthetic/runs/2d__unet"]
    assert len(instructions.ranking) == 2
    [skipped] = instructions.skipped
    assert skipped["candidate"] == "2d__unet + 3d_fullres__unet"
    assert "3d_fullres__unet/fold_0/validation/case_000.npz missing" in skipped["reason"]

    write_run(workspace, root, "2d__unet", lambda mask: mask)  # now perfect: nothing to remove
    assert find_best(load_dataset(root), workspace, ensembles=False).postprocessing == []


def test_missing_validation_mask_is_named(setup):
    workspace, root = setup
    run = write_run(workspace, root, "3d_fullres__unet", shrunk)
    (run / "fold_1" / "validation" / "case_003.nii.gz").unlink()
    with pytest.raises(SelectionError, match=r"fold_1/validation/case_003\.nii\.gz"):
        find_best(load_dataset(root), workspace)


def test_folds_every_run_has_when_none_has_all():
    assert select_folds({"a": [0, 1], "b": [0, 2]}, 3) == ([0], {})
    assert select_folds({"a": [0, 1, 2], "b": [0]}, 3) == ([0, 1, 2], {"b": "folds [1, 2] not validated"})
    assert select_folds({"a": [0, 1, 2], "b": [0]}, 3, folds=[0]) == ([0], {})
    with pytest.raises(SelectionError, match="no fold is validated by every run"):
        select_folds({"a": [0], "b": [1]}, 3)
    with pytest.raises(SelectionError, match=r"folds \[5\] do not exist"):
        select_folds({"a": [0]}, 3, folds=[5])
