"""Predicting as ``mambaseg find-best`` chose: the runs of the inference instructions averaged, then postprocessing.

Dimension letters: k classes, *input the input image's array axes.

Each run predicts softmax probabilities in the input's geometry (through its own preprocessing and
plan, its folds averaged), so averaging over runs is voxel for voxel exact even where the runs' plans
differ in spacing, patch or configuration. The argmax of the average is the mask, which the
instructions' postprocessing steps then clean.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mambaseg.inference.postprocessing import apply_postprocessing, argmax_labels
from mambaseg.inference.predictor import Prediction, Predictor
from mambaseg.inference.runs import RunError, TrainedRun, make_predictor
from mambaseg.io import Image

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InstructedRuns:
    """The runs and folds the instructions name, found on disk, with the steps to apply after prediction."""

    instructions_file: Path
    runs: tuple[TrainedRun, ...]
    postprocessing: list[dict[str, Any]]

    @property
    def name(self) -> str:
        """The runs' folder names joined by ``+``, for the outputs' records."""
        return " + ".join(run.run_dir.name for run in self.runs)


def check_compatible(runs: Sequence[TrainedRun], source: Path) -> None:
    """RunError unless the runs share channels and labels (``source`` names the file that lists them)."""
    first = runs[0]
    for run in runs[1:]:
        for what, mine, theirs in (
            ("channels", run.plans.channel_names, first.plans.channel_names),
            ("labels", run.plans.labels, first.plans.labels),
        ):
            if mine != theirs:
                raise RunError(
                    f"{source}: runs {first.run_dir} and {run.run_dir} have different {what} ({theirs} vs {mine}); "
                    "only runs of one dataset can be averaged"
                )


class EnsemblePredictor:
    """Averages the input-geometry probabilities of several predictors, takes the argmax, applies postprocessing.

    Args:
        predictors: one per run, each averaging its folds; all of the same classes.
        postprocessing: steps for ``apply_postprocessing``, applied to the mask in order.
    """

    def __init__(self, predictors: Sequence[Predictor], postprocessing: Sequence[Mapping[str, Any]] = ()) -> None:
        if not predictors:
            raise ValueError("EnsemblePredictor needs at least one predictor")
        classes = {predictor.num_classes for predictor in predictors}
        if len(classes) != 1:
            raise ValueError(f"EnsemblePredictor: the predictors have different numbers of classes {sorted(classes)}")
        self.predictors = list(predictors)
        self.postprocessing = [dict(step) for step in postprocessing]
        self.num_classes = classes.pop()

    def predict(self, images: Sequence[Image], keep_probabilities: bool = False) -> Prediction:
        """The mask (and, if asked, the averaged probabilities) of one case given as one Image per channel."""
        total = None
        for predictor in self.predictors:
            probabilities = predictor.input_probabilities(images)  # (k, *input)
            total = probabilities if total is None else np.add(total, probabilities, out=total)
            del probabilities
        total /= len(self.predictors)
        mask = apply_postprocessing(argmax_labels(total), self.postprocessing)
        return Prediction(images[0].with_array(mask), total if keep_probabilities else None)


def make_ensemble_predictor(
    instructed: InstructedRuns, device: torch.device, mirroring: bool = True, step: float = 0.5
) -> EnsemblePredictor:
    """One predictor per instructed run (its folds averaged), averaged and postprocessed."""
    logger.info("predicting as %s says: %s", instructed.instructions_file, instructed.name)
    predictors = [make_predictor(run, device, mirroring, step) for run in instructed.runs]
    return EnsemblePredictor(predictors, instructed.postprocessing)
