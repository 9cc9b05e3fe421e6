"""Choose what to predict with: rank runs and pairwise ensembles by cross-validation Dice, then postprocessing.

As in nnU-Net, each candidate's validation predictions, merged over the folds, are scored against the ground
truth, and candidates are ranked by the mean over foreground labels of the per-label mean Dice (ties go to
fewer runs: cheaper inference). An ensemble of two runs averages their softmax (or region sigmoid)
probabilities, so it needs ``CASE.npz`` beside every validation mask of both runs; without them it is
skipped, with the reason.
Postprocessing is then chosen on the best candidate (``mambaseg.evaluation.postprocessing_choice``).
Region-based datasets (labels that are lists of labels, nnU-Net's BraTS style) are scored per region, the
union of its labels on the label maps, and ensembles turn averaged region probabilities into label maps by
``regions_class_order``; no postprocessing is chosen for them.
The result is the inference instructions, which the workspace layer writes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from mambaseg.data import Dataset
from mambaseg.data.dataset import read_dataset_json
from mambaseg.evaluation.cross_validation import (
    Candidate,
    CrossValidation,
    SelectionError,
    ValidationFiles,
    select_folds,
)
from mambaseg.evaluation.dice import Item, dice_per_class, item_key, mean_per_class
from mambaseg.evaluation.metrics import without_ignored
from mambaseg.evaluation.postprocessing_choice import (
    PairSource,
    PostprocessingChoice,
    choose_postprocessing,
    foreground_dice,
)
from mambaseg.evaluation.summary import label_array
from mambaseg.inference.postprocessing import InferenceInstructions

log = logging.getLogger(__name__)


@dataclass
class Score:
    """Cross-validation mean Dice of a candidate, per label and over the foreground."""

    candidate: Candidate
    dice: dict[Item, float]

    @property
    def mean(self) -> float:
        return foreground_dice(self.dice)


def foreground_labels(dataset: Dataset) -> list[Item]:
    """What find-best scores: the dataset's foreground labels or, for a region-based dataset, its regions
    (tuples of labels, scored as their union on the label maps)."""
    regions = dataset.has_regions
    items = []
    for name, value in dataset.labels.items():
        if name == "ignore" or value == dataset.ignore_label:
            continue
        item = item_key([value] if regions and isinstance(value, int) else value)  # regions: every item a tuple
        if item not in (0, (0,)):
            items.append(item)
    if not items:
        raise SelectionError(f"{dataset.dataset_json}: no foreground label to score, got labels {dataset.labels}")
    return items if regions else sorted(items)


def regions_class_order(dataset: Dataset) -> list[int] | None:
    """``regions_class_order`` of a region-based dataset's ``dataset.json`` (None for plain labels).

    Raises:
        SelectionError: a region-based dataset without a valid ``regions_class_order``.
    """
    if not dataset.has_regions:
        return None
    order = read_dataset_json(dataset.root).get("regions_class_order")
    regions = foreground_labels(dataset)
    if not isinstance(order, list) or len(order) != len(regions) or not all(isinstance(v, int) for v in order):
        raise SelectionError(
            f"{dataset.dataset_json}: regions_class_order {order!r} must give one label per region {regions}"
        )
    return order


def _pair_source(cv: CrossValidation, candidate: Candidate, dataset: Dataset) -> PairSource:
    cases = {case.name: case for case in dataset.cases}

    def pairs() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for name in cv.fold_of_case:
            label = cases[name].load_label()
            if label is None:
                raise SelectionError(f"{dataset.root}: case {name!r} has no label file to compare against")
            reference = label_array(label)
            yield cv.prediction(candidate, name, reference.shape), reference

    return pairs


def score_candidate(pairs: PairSource, labels: Sequence[Item], ignore_label: int | None = None) -> dict[Item, float]:
    """Mean Dice per label over the cases the source yields."""
    per_case = [dice_per_class(*without_ignored(p, r, ignore_label), labels) for p, r in pairs()]
    return mean_per_class(per_case)


def _rank_key(score: Score) -> tuple[float, int, str]:
    mean = score.mean
    return (-mean if not math.isnan(mean) else math.inf, len(score.candidate.runs), score.candidate.name)


def find_best(
    dataset: Dataset,
    splits: Sequence[Mapping[str, Sequence[str]]],
    runs: Mapping[str, Mapping[int, ValidationFiles]],
    folds: Sequence[int] | None = None,
    ensembles: bool = True,
    run_reference: Callable[[str], str] = str,
) -> InferenceInstructions:
    """Rank the runs and their pairwise ensembles, choose postprocessing; the instructions to write.

    Args:
        dataset: the dataset, for its ground truth and labels.
        splits: the cross-validation splits (``train`` and ``val`` case names per fold).
        runs: run name -> validated fold -> that fold's validation files.
        folds: folds to compare on; default: all folds of the splits (or those every run has).
        ensembles: also rank ensembles of two runs where their validation probabilities exist.
        run_reference: run name -> how the instructions refer to the run (its folder relative to the workspace).

    Raises:
        SelectionError: no validated run, missing validation files, or unusable labels.
    """
    labels = foreground_labels(dataset)
    if not runs:
        raise SelectionError(f"{dataset.name}: no run with a validated fold; train and validate a fold first")
    fold_ids, skipped = select_folds({name: sorted(by_fold) for name, by_fold in runs.items()}, len(splits), folds)
    usable = [name for name in runs if name not in skipped]
    if not usable:
        raise SelectionError(f"{dataset.name}: no run has validated folds {fold_ids}")
    fold_of_case = {case: fold for fold in fold_ids for case in splits[fold]["val"]}
    cv = CrossValidation(runs, dataset.file_ending, fold_of_case, regions_class_order(dataset))
    for name in usable:
        cv.check_masks(name)

    candidates = [Candidate((name,)) for name in usable]
    if ensembles:
        for pair in combinations(usable, 2):
            missing = next((path for path in map(cv.missing_probabilities, pair) if path is not None), None)
            if missing is None:
                candidates.append(Candidate(pair))
            else:
                skipped[Candidate(pair).name] = f"no validation probabilities ({missing} missing)"
    scores = []
    for candidate in candidates:
        score = Score(candidate, score_candidate(_pair_source(cv, candidate, dataset), labels, dataset.ignore_label))
        log.info("%s: cross-validation mean Dice %.4f", candidate.name, score.mean)
        scores.append(score)
    scores.sort(key=_rank_key)
    best = scores[0]
    if dataset.has_regions:  # postprocessing steps clean labels; regions keep their predictions as they are
        choice = PostprocessingChoice([], best.dice, best.dice)
    else:
        choice = choose_postprocessing(_pair_source(cv, best.candidate, dataset), labels, dataset.ignore_label)

    instructions = InferenceInstructions(
        dataset=dataset.name,
        runs=[run_reference(run) for run in best.candidate.runs],
        folds=fold_ids,
        postprocessing=choice.steps,
        ranking=[
            {
                "rank": rank,
                "candidate": score.candidate.name,
                "runs": [run_reference(run) for run in score.candidate.runs],
                "mean_dice": score.mean,
                "dice_per_class": {str(label): value for label, value in score.dice.items()},
            }
            for rank, score in enumerate(scores, start=1)
        ],
        skipped=[{"candidate": name, "reason": reason} for name, reason in skipped.items()],
        cross_validation={
            "cases": len(fold_of_case),
            "mean_dice": foreground_dice(choice.dice_before),
            "mean_dice_postprocessed": foreground_dice(choice.dice_after),
            "dice_per_class": {str(label): value for label, value in choice.dice_before.items()},
            "dice_per_class_postprocessed": {str(label): value for label, value in choice.dice_after.items()},
        },
    )
    return instructions
