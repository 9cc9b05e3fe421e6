"""Dice per class of label maps, with nnU-Net's convention for empty masks."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np


def dice_per_class(prediction: np.ndarray, reference: np.ndarray, labels: Sequence[int]) -> dict[int, float]:
    """Dice of each label; NaN where the label is absent from both (nnU-Net leaves those out of means)."""
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from the reference's {reference.shape}")
    scores = {}
    for label in labels:
        pred, ref = prediction == label, reference == label
        denominator = int(pred.sum()) + int(ref.sum())
        scores[int(label)] = 2.0 * int((pred & ref).sum()) / denominator if denominator else math.nan
    return scores


def mean_per_class(per_case: Sequence[Mapping[int, float]]) -> dict[int, float]:
    """Mean Dice of each label over cases, NaNs left out (NaN when a label is absent everywhere)."""
    labels = sorted({label for scores in per_case for label in scores})
    means = {}
    for label in labels:
        values = [scores[label] for scores in per_case if label in scores and not math.isnan(scores[label])]
        means[label] = float(np.mean(values)) if values else math.nan
    return means
