"""The cascade in the workspace: which previous stage run feeds a cascade stage, and its masks for each case.

A ``3d_cascade_fullres`` run (plan field ``previous_stage: "3d_lowres"``) learns from the lowres stage's
predictions of its cases as nnU-Net v2's does: every case's prediction is the validation mask of the lowres fold
that held it out (``runs/3d_lowres__NETWORK/fold_J/validation/``), so the cascade never sees a lowres mask of a
case the lowres network trained on. Training needs the lowres folds whose validation covers the cascade fold's
cases (all five for a numbered fold, as each fold's training cases are spread over the other folds' validation).

Each mask is brought once onto the cascade's preprocessed grid and kept beside it, in
``fold_J/predicted_next_stage/3d_cascade_fullres/CASE.npz``, with ``CASE.json`` recording the digests of the mask
and of the preprocessed case it was made for; a record that no longer matches (the lowres fold was trained again,
or the data preprocessed again) makes it again.

The previous stage run is the one of the same network as the cascade's; else the only run of that configuration.
Prediction with a cascade run predicts with every trained fold of that run first (``models.with_previous_stage``).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mambaseg.data import Dataset
from mambaseg.data.splits import load_or_create_splits
from mambaseg.inference.cascade import mask_on_grid
from mambaseg.inference.pipeline import PreviousMask
from mambaseg.io import Image
from mambaseg.io.atomic import write_atomically, write_text_atomically
from mambaseg.io.files import read_image
from mambaseg.planning.plans import ConfigurationPlan
from mambaseg.preprocessing.case import CaseProperties
from mambaseg.preprocessing.storage import case_files
from mambaseg.training.setup import RunSpec
from mambaseg.workspace.layout import DatasetFiles, RunFiles

log = logging.getLogger(__name__)


class CascadeError(ValueError):
    """A cascade stage whose previous stage is missing; the message names the run, fold or file and what to run."""


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def previous_stage_run(files: DatasetFiles, previous: str, network: str) -> RunFiles:
    """The ``previous`` configuration's run feeding a cascade of ``network`` (module doc).

    Raises:
        CascadeError: there is no such run, or several and none of ``network``.
    """
    runs = [run for run in files.runs() if run.configuration == previous]
    same = [run for run in runs if run.network == network]
    if same:
        return same[0]
    if len(runs) == 1:
        return runs[0]
    if not runs:
        raise CascadeError(
            f"{files.runs_folder}: no {previous} run, which the cascade stage needs; train its folds first: "
            f"`mambaseg train {files.name} -c {previous} -f K -n {network}` for K = 0..4"
        )
    raise CascadeError(
        f"{files.runs_folder}: several {previous} runs ({', '.join(run.name for run in runs)}) and none of network "
        f"{network!r}; train the cascade with the network of the one to use (-n)"
    )


def _fold_of_case(files: DatasetFiles, dataset: Dataset) -> dict[str, str]:
    """Case -> the numbered fold whose validation holds it, from ``splits.json``."""
    splits = load_or_create_splits(files.splits, [case.name for case in dataset.cases])
    return {name: str(k) for k, split in enumerate(splits) for name in split["val"]}


def _grid_mask(mask_file: Path, preprocessed: Path, case: str, out: tuple[Path, Path]) -> Path:
    """The mask of ``mask_file`` on the preprocessed grid of ``case``, made (or reused when still current)."""
    npz, record_file = out
    case_json = case_files(preprocessed, case)[1]
    record = {"mask": str(mask_file), "mask_sha256": _digest(mask_file), "case_sha256": _digest(case_json)}
    try:
        if json.loads(record_file.read_text()) == record and npz.is_file():
            return npz
    except (OSError, ValueError):
        pass
    properties = CaseProperties.from_dict(json.loads(case_json.read_text()))
    seg = mask_on_grid(read_image(mask_file).array, properties)  # (1, *case)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, seg=seg.astype(np.int16))
    npz.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(npz, lambda handle: handle.write(buffer.getvalue()))
    write_text_atomically(record_file, json.dumps(record, indent=1) + "\n")
    return npz


def previous_stage_masks(
    dataset: Dataset, files: DatasetFiles, configuration: str, plan: ConfigurationPlan, cases: Sequence[str]
) -> dict[str, Path]:
    """Case -> its previous stage mask on ``configuration``'s preprocessed grid, for a cascade plan's ``cases``.

    Raises:
        CascadeError: a previous stage fold that validated one of the cases has not been trained (or validated);
            the message names every missing fold and the command to run.
    """
    run = previous_stage_run(files, plan.previous_stage, plan.network)
    fold_of = _fold_of_case(files, dataset)
    missing: dict[str, list[str]] = {}
    masks = {}
    for case in cases:
        fold = run.fold(fold_of[case])
        mask = fold.validation_mask(case, dataset.file_ending)
        if mask.is_file():
            masks[case] = (fold, mask)
        else:
            missing.setdefault(fold.fold, []).append(case)
    if missing:
        folds = sorted(missing, key=int)
        details = "; ".join(
            f"fold {k}: {', '.join(missing[k][:3])}{' ...' if len(missing[k]) > 3 else ''}" for k in folds
        )
        commands = " and ".join(
            f"`mambaseg train {files.name} -c {run.configuration} -f {k} -n {run.network}`" for k in folds
        )
        raise CascadeError(
            f"{run.folder}: {configuration} needs the {run.configuration} validation masks of its cases, and these "
            f"folds have none ({details}); run {commands}"
        )
    preprocessed = files.preprocessed(configuration)
    return {
        case: _grid_mask(mask, preprocessed, case, fold.next_stage_files(configuration, case))
        for case, (fold, mask) in masks.items()
    }


def _mask_file(npz: Path) -> Path:
    """The original-geometry mask a grid mask was made from, as its record names it."""
    return Path(json.loads(npz.with_suffix(".json").read_text())["mask"])


def validation_previous_masks(spec: RunSpec) -> PreviousMask | None:
    """A cascade fold's input masks for validating: the previous stage's validation masks of its held-out cases
    (read by the case's first image file); None for a fold that is no cascade stage."""
    if spec.previous_stage is None:
        return None
    by_source = {}
    for case in spec.dataset.cases:
        if case.name in spec.val_cases:
            by_source[str(case.image_files[0])] = _mask_file(spec.previous_stage[case.name])

    def previous(images: Sequence[Image]) -> np.ndarray:
        return read_image(by_source[images[0].source]).array

    return previous
