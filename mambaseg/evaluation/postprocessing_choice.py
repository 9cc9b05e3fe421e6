"""Choose postprocessing from cross-validation predictions, by nnU-Net's rule.

First, keeping the largest connected component of all foreground labels together: chosen if the mean
foreground Dice improves and no label's mean Dice gets worse. Then, with several labels, keeping the largest
component of each label on its own, on top of the first decision: chosen for each label whose mean Dice
improves. Removing components of one label never changes another label's mask, so the per-label decisions
are independent of each other and are all measured in one pass over the cases.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from mambaseg.evaluation.dice import dice_per_class, mean_per_class
from mambaseg.evaluation.metrics import without_ignored
from mambaseg.inference.postprocessing import Step, apply_postprocessing, keep_largest_component_step

PairSource = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]


def foreground_dice(means: dict[int, float]) -> float:
    """Mean of the per-label mean Dice, labels never scored left out (NaN if none was)."""
    values = [value for value in means.values() if not math.isnan(value)]
    return float(np.mean(values)) if values else math.nan


@dataclass
class PostprocessingChoice:
    """The chosen steps and the per-label mean Dice before and after them."""

    steps: list[Step]
    dice_before: dict[int, float]
    dice_after: dict[int, float]


def _dice(
    prediction: np.ndarray, reference: np.ndarray, labels: Sequence[int], ignore_label: int | None
) -> dict[int, float]:
    return dice_per_class(*without_ignored(prediction, reference, ignore_label), labels)


def choose_postprocessing(
    pairs: PairSource, labels: Sequence[int], ignore_label: int | None = None
) -> PostprocessingChoice:
    """Steps that improve the cross-validation Dice of the predictions.

    Args:
        pairs: called once per pass (twice with several labels), yields (prediction, reference) label maps.
        labels: foreground labels.
        ignore_label: reference value whose voxels count for neither mask.
    """
    labels = [int(label) for label in labels]
    joint = keep_largest_component_step(labels, jointly=True)
    before_cases, joint_cases = [], []
    for prediction, reference in pairs():
        before_cases.append(_dice(prediction, reference, labels, ignore_label))
        joint_cases.append(_dice(apply_postprocessing(prediction, [joint]), reference, labels, ignore_label))
    before, with_joint = mean_per_class(before_cases), mean_per_class(joint_cases)
    improves = foreground_dice(with_joint) > foreground_dice(before)
    use_joint = improves and not any(with_joint[label] < before[label] for label in labels)
    steps = [joint] if use_joint else []
    after = dict(with_joint if use_joint else before)
    if len(labels) > 1:
        per_label: dict[int, list[dict[int, float]]] = {label: [] for label in labels}
        for prediction, reference in pairs():
            source = apply_postprocessing(prediction, steps)
            for label in labels:
                step = keep_largest_component_step([label], jointly=False)
                cleaned = apply_postprocessing(source, [step])
                per_label[label].append(_dice(cleaned, reference, [label], ignore_label))
        for label in labels:
            score = mean_per_class(per_label[label])[label]
            if score > after[label]:
                steps.append(keep_largest_component_step([label], jointly=False))
                after[label] = score
    return PostprocessingChoice(steps, before, after)
