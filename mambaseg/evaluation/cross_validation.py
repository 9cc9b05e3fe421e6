"""Cross-validation predictions of trained runs, merged over folds so that every case is predicted once.

A run's validated folds each hold one mask per validation case (in the case's original geometry) and, where
prediction kept them, softmax probabilities (an ``.npz``, key ``probabilities``, shape (k, *case shape), class
index = label value); the workspace layer says where. A candidate is one run (its masks)
or an ensemble of runs (their probabilities averaged, then the argmax).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from mambaseg.evaluation.summary import label_array
from mambaseg.inference.ensemble import EnsembleError, read_probabilities
from mambaseg.inference.postprocessing import to_labels
from mambaseg.io import read_image

log = logging.getLogger(__name__)


class SelectionError(ValueError):
    """Runs, folds or validation files that do not allow choosing a configuration."""


@dataclass(frozen=True)
class Candidate:
    """One run, or an ensemble of runs, by run folder name (``CONFIGURATION__NETWORK``)."""

    runs: tuple[str, ...]

    @property
    def name(self) -> str:
        return " + ".join(self.runs)


def select_folds(
    runs: Mapping[str, Sequence[int]], n_folds: int, folds: Sequence[int] | None = None
) -> tuple[list[int], dict[str, str]]:
    """The folds to compare the runs on, and the runs left out with the reason.

    Given ``folds``, runs lacking any of them are left out. Otherwise the runs with all ``n_folds`` folds are
    kept and the others left out; if no run has them all, the folds every run has are used.

    Raises:
        SelectionError: a requested fold outside the splits, or no fold that every run has validated.
    """
    if folds is not None:
        wanted = sorted(set(folds))
        outside = [fold for fold in wanted if not 0 <= fold < n_folds]
        if outside:
            raise SelectionError(f"folds {outside} do not exist: the splits have folds 0-{n_folds - 1}")
    elif any(set(range(n_folds)) <= set(validated) for validated in runs.values()):
        wanted = list(range(n_folds))
    else:
        wanted = sorted(set.intersection(*(set(validated) for validated in runs.values())))
        if not wanted:
            listing = "; ".join(f"{name}: {list(validated)}" for name, validated in runs.items())
            raise SelectionError(f"no fold is validated by every run ({listing}); pass the folds to compare")
        log.warning("no run has all %d folds; comparing on the folds every run has: %s", n_folds, wanted)
    skipped = {}
    for name, validated in runs.items():
        missing = sorted(set(wanted) - set(validated))
        if missing:
            skipped[name] = f"folds {missing} not validated"
    return wanted, skipped


class ValidationFiles(Protocol):
    """Where one fold's validation predictions lie (the workspace layer's ``FoldFiles`` provides them)."""

    def validation_mask(self, case: str, file_ending: str) -> Path: ...

    def validation_probabilities(self, case: str) -> Path: ...


@dataclass(frozen=True)
class CrossValidation:
    """Where the validation predictions of runs lie, for the cases of the chosen folds.

    Args:
        folds: run name -> fold -> that fold's validation files.
        file_ending: the masks' file ending.
        fold_of_case: validation case -> the fold it is validated in.
        regions_class_order: for region-based runs (sigmoid probabilities per region), the label of each region.
    """

    folds: Mapping[str, Mapping[int, ValidationFiles]]
    file_ending: str
    fold_of_case: dict[str, int]
    regions_class_order: Sequence[int] | None = None

    def mask_file(self, run: str, case: str) -> Path:
        return self.folds[run][self.fold_of_case[case]].validation_mask(case, self.file_ending)

    def probabilities_file(self, run: str, case: str) -> Path:
        return self.folds[run][self.fold_of_case[case]].validation_probabilities(case)

    def check_masks(self, run: str) -> None:
        """SelectionError naming the first validation mask of ``run`` that is missing."""
        for case in self.fold_of_case:
            path = self.mask_file(run, case)
            if not path.is_file():
                raise SelectionError(f"{path}: validation mask of case {case!r} missing (validation interrupted?)")

    def missing_probabilities(self, run: str) -> Path | None:
        """The first validation case of ``run`` without saved probabilities; None when all have them."""
        for case in self.fold_of_case:
            path = self.probabilities_file(run, case)
            if not path.is_file():
                return path
        return None

    def prediction(self, candidate: Candidate, case: str, shape: tuple[int, ...]) -> np.ndarray:
        """The candidate's mask of ``case``, checked to have the reference's ``shape``."""
        if len(candidate.runs) == 1:
            path = self.mask_file(candidate.runs[0], case)
            mask = label_array(read_image(path))
            if mask.shape != shape:
                raise SelectionError(f"{path}: shape {mask.shape} differs from the reference's {shape}")
            return mask
        total = None
        for run in candidate.runs:
            path = self.probabilities_file(run, case)
            probabilities = self._probabilities(path, shape, self.regions_class_order)
            if total is not None and total.shape != probabilities.shape:
                raise SelectionError(f"{path}: {probabilities.shape[0]} classes, the other runs {total.shape[0]}")
            total = probabilities if total is None else total + probabilities
        return to_labels(total / len(candidate.runs), self.regions_class_order)

    @staticmethod
    def _probabilities(path: Path, shape: tuple[int, ...], regions_class_order: list[int] | None) -> np.ndarray:
        """The file's probabilities, refused when they do not fit ``shape`` or record other regions than the
        dataset's (files that record none, written before regions were recorded, are taken as the dataset's)."""
        try:
            probabilities, regions = read_probabilities(path)
        except EnsembleError as error:
            raise SelectionError(str(error)) from error
        if regions is not None and regions != (None if regions_class_order is None else list(regions_class_order)):
            raise SelectionError(
                f"{path}: probabilities of regions painted as {regions}, the dataset's regions_class_order is "
                f"{regions_class_order}; validate the fold again"
            )
        if probabilities.shape[1:] != shape:
            raise SelectionError(
                f"{path}: probabilities of shape {probabilities.shape} do not fit the reference's shape {shape}"
            )
        return probabilities  # (k, *shape)
