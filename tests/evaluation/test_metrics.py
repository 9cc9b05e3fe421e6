import math

import numpy as np
import pytest
import torch
from monai.metrics import compute_hausdorff_distance

from mambaseg.evaluation.metrics import case_metrics, hd95, image_diagonal_mm, surface_dice


def cubes(offset_axis: int = 0, offset: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Two 6-voxel cubes in a 12^3 image, the second shifted by ``offset`` voxels along ``offset_axis``."""
    first, second = np.zeros((12, 12, 12), bool), np.zeros((12, 12, 12), bool)
    first[2:8, 2:8, 2:8] = True
    box = [slice(2, 8)] * 3
    box[offset_axis] = slice(2 + offset, 8 + offset)
    second[tuple(box)] = True
    return first, second


def squares() -> tuple[np.ndarray, np.ndarray]:
    """4x4 squares one row apart: edge pixels of each lie 0 or 1 row (or column) from the other's edge."""
    first, second = np.zeros((10, 10), bool), np.zeros((10, 10), bool)
    first[0:4, 0:4] = True
    second[1:5, 0:4] = True
    return first, second


def test_hd95_of_cubes_offset_by_two_voxels():
    first, second = cubes()
    assert hd95(first, second, (1.0, 1.0, 1.0)) == pytest.approx(2.0)


def test_hd95_follows_anisotropic_spacing():
    first, second = cubes(offset_axis=0)
    assert hd95(first, second, (3.0, 1.0, 1.0)) == pytest.approx(6.0)  # the shifted axis is 3 mm a voxel
    assert hd95(first, second, (1.0, 3.0, 3.0)) == pytest.approx(2.0)  # the other axes do not matter


def test_hd95_and_surface_dice_by_hand_in_2d():
    first, second = squares()
    # Of 12 edge pixels per square, 6 lie 1 pixel from the other's edge (the row 0/4 side and two inner ones).
    assert hd95(first, second, (1.0, 1.0)) == pytest.approx(1.0)
    assert surface_dice(first, second, (1.0, 1.0), tolerance_mm=0.5) == pytest.approx(12 / 24)
    assert surface_dice(first, second, (1.0, 1.0), tolerance_mm=1.0) == pytest.approx(1.0)
    # 2 mm rows: the 4 outer-row pixels are 2 mm away, the 2 inner ones still 1 mm (a column away).
    assert hd95(first, second, (2.0, 1.0)) == pytest.approx(2.0)
    assert surface_dice(first, second, (2.0, 1.0), tolerance_mm=1.0) == pytest.approx(16 / 24)
    assert surface_dice(first, second, (2.0, 1.0), tolerance_mm=2.0) == pytest.approx(1.0)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_cropping_keeps_distances_of_masks_touching_the_border():
    rng = np.random.default_rng(0)
    first, second = rng.random((9, 11, 10)) > 0.7, rng.random((9, 11, 10)) > 0.7
    first[:, :, 5:], second[:3] = False, False
    spacing = (2.0, 1.0, 0.5)
    full = compute_hausdorff_distance(
        torch.from_numpy(first)[None, None], torch.from_numpy(second)[None, None], percentile=95, spacing=spacing
    )
    assert hd95(first, second, spacing) == pytest.approx(float(full.item()))


def test_case_metrics_dice_and_counts():
    first, second = cubes()
    prediction, reference = first.astype(np.uint8), second.astype(np.uint8) * 2
    prediction[second & ~first] = 2
    scores = case_metrics(prediction, reference, [1, 2], (1.0, 1.0, 1.0))
    assert scores[2]["dice"] == pytest.approx(2 * 72 / (72 + 216))  # 72 voxels of label 2 predicted, all right
    assert scores[1]["n_pred"] == 216 and scores[1]["n_ref"] == 0


def test_empty_mask_conventions():
    shape, spacing = (10, 10), (1.0, 2.0)
    diagonal = math.sqrt(10**2 + 20**2)
    assert image_diagonal_mm(shape, spacing) == pytest.approx(diagonal)
    present = np.zeros(shape, np.uint8)
    present[2:5, 2:5] = 1
    empty = np.zeros(shape, np.uint8)
    both = case_metrics(empty, empty, [1], spacing)[1]
    assert all(math.isnan(both[metric]) for metric in ("dice", "hd95", "nsd"))
    assert both["n_pred"] == both["n_ref"] == 0
    for prediction, reference in ((empty, present), (present, empty)):
        one = case_metrics(prediction, reference, [1], spacing)[1]
        assert one["dice"] == 0.0 and one["nsd"] == 0.0
        assert one["hd95"] == pytest.approx(diagonal)


def test_tolerance_per_label_and_ignore_label():
    first, second = squares()
    prediction = first.astype(np.uint8)
    reference = second.astype(np.uint8)
    scores = case_metrics(prediction, reference, [1], (1.0, 1.0), tolerance_mm={1: 0.5})
    assert scores[1]["nsd"] == pytest.approx(0.5)
    reference[0, :] = 9  # the row only the prediction covers is ignored: 12 predicted voxels, all right
    scores = case_metrics(prediction, reference, [1], (1.0, 1.0), ignore_label=9)
    assert scores[1]["dice"] == pytest.approx(2 * 12 / (12 + 16))
    assert scores[1]["n_pred"] == 12


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differs"):
        case_metrics(np.zeros((2, 2)), np.zeros((2, 3)), [1], (1.0, 1.0))


def test_case_metrics_computes_only_the_metrics_asked_for():
    reference = np.zeros((6, 6), np.uint8)
    reference[1:4, 1:4] = 1
    prediction = np.roll(reference, 1, axis=1)
    scores = case_metrics(prediction, reference, [1, 2], (1.0, 1.0), metrics=("nsd", "dice"))
    assert list(scores[1]) == ["dice", "nsd", "n_pred", "n_ref"] and scores[1]["dice"] == pytest.approx(2 / 3)
    assert np.isnan(scores[2]["dice"]) and list(scores[2]) == ["dice", "nsd", "n_pred", "n_ref"]
