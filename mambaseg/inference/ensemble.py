"""Ensembles: predicting as ``mambaseg find-best`` chose, and averaging saved probability files into masks.

Dimension letters: k classes, *input the input image's array axes.

Each run predicts softmax probabilities in the input's geometry (through its own preprocessing and
plan, its folds averaged), so averaging over runs is voxel for voxel exact even where the runs' plans
differ in spacing, patch or configuration. The argmax of the average is the mask, which the
instructions' postprocessing steps then clean.

Saved probabilities (``predict --save-probabilities``, a fold's validation) are one ``.npz`` per case, key
``probabilities``, float16, (k, *input); ``average_probability_files`` averages those of several predictions of
one case, checked to agree in classes and geometry, as ``mambaseg ensemble`` does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mambaseg.inference.postprocessing import apply_postprocessing, probabilities_to_mask
from mambaseg.inference.predictor import Prediction, Predictor
from mambaseg.inference.runs import RunError, TrainedRun, make_predictor
from mambaseg.io import Image, geometry_differences, read_image
from mambaseg.io.atomic import write_atomically

logger = logging.getLogger(__name__)

PROBABILITIES_KEY = "probabilities"


class EnsembleError(ValueError):
    """Probability files that cannot be averaged; the message names them."""


def write_probabilities(path: Path, probabilities: np.ndarray, compress: bool = True) -> None:
    """``path`` (``.npz``) holding ``probabilities`` (k, *input) as float16 under the key ``probabilities``."""
    half = probabilities.astype(np.float16)
    save = np.savez_compressed if compress else np.savez
    write_atomically(Path(path), lambda handle: save(handle, **{PROBABILITIES_KEY: half}))


def read_probabilities(path: Path) -> np.ndarray:
    """The (k, *input) float32 probabilities of an ``.npz``; EnsembleError naming the file when unreadable."""
    try:
        with np.load(path) as content:
            return content[PROBABILITIES_KEY].astype(np.float32)
    except (OSError, ValueError, KeyError, EOFError) as error:
        raise EnsembleError(f"{path}: cannot read the {PROBABILITIES_KEY!r} array: {error}") from error


@dataclass(frozen=True)
class ProbabilityFile:
    """One saved prediction of a case: its probabilities, and what gives its geometry (a JSON sidecar or a mask)."""

    probabilities: Path
    geometry: Path


def read_geometry(path: Path) -> Image:
    """The grid of a prediction: from a ``.json`` sidecar (``shape``, ``spacing``, ``origin``, ``direction``, as
    ``predict --save-probabilities`` writes it) or from an image file (a mask); the Image's voxels are zeros."""
    if path.suffix != ".json":
        image = read_image(path)
        return image.with_array(np.broadcast_to(np.uint8(0), image.array.shape))
    try:
        content = json.loads(path.read_text())
        shape = tuple(int(n) for n in content["shape"])
        return Image(
            np.broadcast_to(np.uint8(0), shape),
            tuple(float(v) for v in content["spacing"]),
            tuple(float(v) for v in content["origin"]),
            tuple(float(v) for v in content["direction"]),
            str(path),
        )
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise EnsembleError(
            f"{path}: not a probabilities sidecar with shape, spacing, origin and direction: {error}"
        ) from error


@dataclass
class EnsembleSummary:
    """What ``ensemble`` did: cases written, cases whose mask existed (skipped), cases not in every folder."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)


def average_probability_files(files: Sequence[ProbabilityFile]) -> tuple[np.ndarray, Image]:
    """The mean (k, *input) of one case's saved probabilities, and the case's grid (an Image of zeros).

    Raises:
        EnsembleError: naming the files, when the class counts or the geometries differ, or the probabilities
            do not have the shape of their geometry.
    """
    if not files:
        raise EnsembleError("average_probability_files needs at least one probability file")
    total, reference, first = None, None, files[0]
    for file in files:
        geometry = read_geometry(file.geometry)
        probabilities = read_probabilities(file.probabilities)
        if probabilities.shape[1:] != geometry.array.shape:
            raise EnsembleError(
                f"{file.probabilities}: probabilities of shape {probabilities.shape} do not fit the shape "
                f"{geometry.array.shape} of {file.geometry}"
            )
        if reference is None:
            total, reference = probabilities, geometry
            continue
        if probabilities.shape[0] != total.shape[0]:
            raise EnsembleError(
                f"{file.probabilities} has {probabilities.shape[0]} classes and {first.probabilities} "
                f"{total.shape[0]}: only predictions of the same classes can be averaged"
            )
        differences = geometry_differences(geometry, reference)
        if differences:
            raise EnsembleError(
                f"{file.geometry}: {differences[0].describe()} of {first.geometry}: "
                "only predictions of the same image can be averaged"
            )
        np.add(total, probabilities, out=total)
        del probabilities
    total /= len(files)
    return total, reference


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
        self.regions_class_order = self.predictors[0].regions_class_order

    def predict(self, images: Sequence[Image], keep_probabilities: bool = False) -> Prediction:
        """The mask (and, if asked, the averaged probabilities) of one case given as one Image per channel."""
        total = None
        for predictor in self.predictors:
            probabilities = predictor.input_probabilities(images)  # (k, *input)
            total = probabilities if total is None else np.add(total, probabilities, out=total)
            del probabilities
        total /= len(self.predictors)
        mask = apply_postprocessing(probabilities_to_mask(total, self.regions_class_order), self.postprocessing)
        return Prediction(images[0].with_array(mask), total if keep_probabilities else None)


def make_ensemble_predictor(
    instructed: InstructedRuns,
    device: torch.device,
    mirroring: bool = True,
    step: float = 0.5,
    predictor_of: Callable[..., Predictor] = make_predictor,
    **speed,
) -> EnsemblePredictor:
    """One predictor per instructed run (its folds averaged, built by ``predictor_of``), averaged and postprocessed.

    ``speed``: passed on to ``predictor_of`` as keywords (``make_predictor``'s ``autocast_dtype`` and ``compile``).
    """
    logger.info("predicting as %s says: %s", instructed.instructions_file, instructed.name)
    predictors = [predictor_of(run, device, mirroring, step, **speed) for run in instructed.runs]
    return EnsemblePredictor(predictors, instructed.postprocessing)
