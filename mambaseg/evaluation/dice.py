"""Dice per class (or region) of label maps, with nnU-Net's convention for empty masks.

A scored item is a label value, or a region: a tuple of label values scored as their union (nnU-Net's
region-based evaluation, e.g. BraTS' whole tumour ``(1, 2, 3)``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

Item = int | tuple[int, ...]


def item_key(item: int | Sequence[int]) -> Item:
    """A label as an int, a region (a list or tuple of labels) as a tuple of ints."""
    return tuple(int(label) for label in item) if isinstance(item, Sequence) else int(item)


def item_mask(array: np.ndarray, item: Item) -> np.ndarray:
    """Where ``array`` holds the label, or any label of the region."""
    return np.isin(array, item) if isinstance(item, tuple) else array == item


def dice_per_class(prediction: np.ndarray, reference: np.ndarray, labels: Sequence[Item]) -> dict[Item, float]:
    """Dice of each label or region; NaN where it is absent from both (nnU-Net leaves those out of means)."""
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from the reference's {reference.shape}")
    scores = {}
    for label in map(item_key, labels):
        pred, ref = item_mask(prediction, label), item_mask(reference, label)
        denominator = int(pred.sum()) + int(ref.sum())
        scores[label] = 2.0 * int((pred & ref).sum()) / denominator if denominator else math.nan
    return scores


def mean_per_class(per_case: Sequence[Mapping[int, float]]) -> dict[int, float]:
    """Mean Dice of each label over cases, NaNs left out (NaN when a label is absent everywhere)."""
    labels = sorted({label for scores in per_case for label in scores}, key=lambda item: (isinstance(item, int), item))
    means = {}
    for label in labels:
        values = [scores[label] for scores in per_case if label in scores and not math.isnan(scores[label])]
        means[label] = float(np.mean(values)) if values else math.nan
    return means
