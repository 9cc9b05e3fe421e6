import json

import numpy as np
import pytest

from mambaseg.evaluation.postprocessing_choice import choose_postprocessing
from mambaseg.evaluation.summary import write_json
from mambaseg.inference.postprocessing import (
    InferenceInstructions,
    PostprocessingError,
    apply_postprocessing,
    keep_largest_component,
    keep_largest_component_step,
    load_instructions,
)


def blobs() -> np.ndarray:
    mask = np.zeros((10, 10, 10), np.uint8)
    mask[1:5, 1:5, 1:5] = 1  # 64 voxels
    mask[7:9, 7:9, 7:9] = 1  # 8 voxels, apart
    return mask


def test_keep_largest_removes_a_small_disconnected_blob():
    mask = blobs()
    cleaned = keep_largest_component(mask, [1])
    assert cleaned.sum() == 64 and cleaned[1:5, 1:5, 1:5].all()
    assert mask.sum() == 72  # input unchanged


def test_components_touching_at_a_corner_are_one():
    mask = blobs()
    mask[5, 5, 5] = 1  # touches the big cube at its corner (4, 4, 4) only
    assert keep_largest_component(mask, [1])[5, 5, 5] == 1


def test_jointly_or_per_label():
    mask = np.zeros((12, 12), np.uint8)
    mask[0:4, 0:4] = 1
    mask[0:4, 4:6] = 2  # touches label 1: one joint component
    mask[10:12, 10:12] = 2  # a second component of label 2
    mask[8, 0] = 1  # a second component of label 1
    jointly = keep_largest_component(mask, [1, 2], jointly=True)
    assert jointly[10:12, 10:12].sum() == 0 and jointly[8, 0] == 0 and jointly[0:4, 4:6].all()
    per_label = keep_largest_component(mask, [2], jointly=False)
    assert per_label[10:12, 10:12].sum() == 0 and per_label[8, 0] == 1  # label 1 untouched


def test_apply_postprocessing_steps_in_order_and_rejects_unknown_ones():
    mask = blobs()
    steps = [keep_largest_component_step([1], jointly=False)]
    assert apply_postprocessing(mask, steps).sum() == 64
    assert np.array_equal(apply_postprocessing(mask, []), mask)
    with pytest.raises(PostprocessingError, match="fill_holes"):
        apply_postprocessing(mask, [{"op": "fill_holes", "labels": [1], "jointly": True}])
    with pytest.raises(PostprocessingError, match="labels"):
        apply_postprocessing(mask, [{"op": "keep_largest_component", "labels": [0], "jointly": True}])


def two_label_case() -> tuple[np.ndarray, np.ndarray]:
    """Label 1 predicted with a spurious blob; label 2 truly in two parts, both predicted."""
    reference = np.zeros((12, 12, 12), np.uint8)
    reference[1:6, 1:6, 1:6] = 1
    reference[6:9, 1:6, 1:6] = 2  # touches label 1
    reference[10:12, 10:12, 10:12] = 2  # apart, but true
    prediction = reference.copy()
    prediction[0:2, 10:12, 0:2] = 1  # spurious
    return prediction, reference


def test_choice_rejects_the_joint_step_when_a_label_loses_and_keeps_the_per_label_one():
    prediction, reference = two_label_case()
    choice = choose_postprocessing(lambda: [(prediction, reference)], [1, 2])
    assert choice.steps == [keep_largest_component_step([1], jointly=False)]
    assert choice.dice_before[1] < 1.0 and choice.dice_after == {1: 1.0, 2: 1.0}


def test_choice_takes_the_joint_step_when_it_helps():
    reference = blobs()
    reference[7:9, 7:9, 7:9] = 0
    choice = choose_postprocessing(lambda: [(blobs(), reference)], [1])
    assert choice.steps == [keep_largest_component_step([1], jointly=True)]
    assert choice.dice_after[1] == 1.0


def test_choice_takes_nothing_when_components_are_true():
    _, reference = two_label_case()
    choice = choose_postprocessing(lambda: [(reference, reference)], [1, 2])
    assert choice.steps == [] and choice.dice_before == choice.dice_after


def test_instructions_round_trip(tmp_path):
    instructions = InferenceInstructions(
        dataset="Dataset001_Test",
        runs=["Dataset001_Test/runs/3d_fullres__unet"],
        folds=[0, 1],
        postprocessing=[keep_largest_component_step([1, 2], jointly=True)],
        ranking=[{"rank": 1, "candidate": "3d_fullres__unet", "mean_dice": float("nan")}],
    )
    path = tmp_path / "inference_instructions.json"
    write_json(path, instructions.to_dict())
    loaded = load_instructions(path)
    assert loaded.runs == instructions.runs and loaded.postprocessing == instructions.postprocessing
    assert loaded.ranking[0]["mean_dice"] is None  # NaN is written as null


def test_bad_instructions_name_the_file_and_value(tmp_path):
    path = tmp_path / "inference_instructions.json"
    path.write_text(json.dumps({"schema_version": 99, "dataset": "x", "runs": ["a"], "folds": [0]}))
    with pytest.raises(PostprocessingError, match=r"inference_instructions\.json: schema_version 99"):
        load_instructions(path)
    path.write_text(json.dumps({"schema_version": 1, "dataset": "x", "runs": ["a"], "folds": [0], "postprocessing": 3}))
    with pytest.raises(PostprocessingError, match="must be a list"):
        load_instructions(path)
