import math

import numpy as np
import pytest

from mambaseg.evaluation.dice import dice_per_class, mean_per_class


def test_dice_by_hand():
    prediction = np.array([[1, 1, 0], [2, 0, 0]])
    reference = np.array([[1, 0, 0], [2, 2, 0]])
    scores = dice_per_class(prediction, reference, [1, 2, 3])
    assert scores[1] == pytest.approx(2 / 3) and scores[2] == pytest.approx(2 / 3)
    assert math.isnan(scores[3])  # absent from both


def test_mean_leaves_out_nan():
    means = mean_per_class([{1: 0.5, 2: math.nan}, {1: 1.0, 2: 0.8}])
    assert means == {1: 0.75, 2: 0.8}


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differs"):
        dice_per_class(np.zeros((2, 2)), np.zeros((2, 3)), [1])
