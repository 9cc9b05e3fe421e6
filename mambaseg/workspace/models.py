"""Trained models in the workspace: one run's folds, the runs that find-best's instructions name, or those an exported
model describes; each as a ``ModelDescription``, every cascade stage with the model of its previous stage."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mambaseg.inference.postprocessing import load_instructions
from mambaseg.inference.runs import ModelDescription, RunError, TrainedRun, check_compatible, load_trained_run
from mambaseg.workspace.cascade import CascadeError, previous_stage_run
from mambaseg.workspace.layout import FOLD_PREFIX, DatasetFiles, FoldFiles, LayoutError, RunFiles, Workspace


def _folds_with(run: RunFiles, folds: Sequence[str] | None, checkpoint: str) -> list[FoldFiles]:
    if folds:
        chosen = [run.fold(fold) for fold in folds]
        for fold in chosen:
            path = fold.checkpoints.get(checkpoint)
            if not path.is_file():
                raise RunError(f"{path}: no such checkpoint (fold {fold.fold!r})")
        return chosen
    found = [fold for fold in run.folds() if fold.checkpoints.get(checkpoint).is_file()]
    if not found:
        name = run.fold(0).checkpoints.get(checkpoint).name
        raise RunError(f"{run.folder}: no {FOLD_PREFIX}* folder holds {name}; train a fold first")
    return found


def find_run(run_dir: str | os.PathLike, folds: Sequence[str] | None = None, checkpoint: str = "final") -> TrainedRun:
    """The run in ``run_dir`` with the given folds (default: every fold that has the checkpoint).

    Args:
        run_dir: a ``runs/CONFIGURATION__NETWORK`` folder.
        folds: fold names such as ``0`` or ``all``.
        checkpoint: ``final``, ``best`` or ``latest``.

    Raises:
        RunError: the folder, a fold, a checkpoint or a plan is missing, or the folds' plans differ.
    """
    try:
        run = RunFiles.parse(run_dir)
        chosen = _folds_with(run, folds, checkpoint)
    except LayoutError as err:
        raise RunError(str(err)) from err
    pairs = [(fold.plan, fold.checkpoints.get(checkpoint)) for fold in chosen]
    return load_trained_run(run.folder, run.configuration, pairs)


def with_previous_stage(run: TrainedRun, checkpoint: str) -> TrainedRun:
    """``run``, and for a cascade stage its previous stage's run (every fold with ``checkpoint``), found in the same
    dataset's runs folder (``cascade.previous_stage_run``), itself with its previous stage if it has one.

    Raises:
        RunError: the previous stage run or its folds are missing.
    """
    if run.plan.previous_stage is None:
        return run
    files = DatasetFiles(run.run_dir.parent.parent)
    try:
        folder = previous_stage_run(files, run.plan.previous_stage, run.plan.network).folder
    except CascadeError as error:
        raise RunError(f"{run.run_dir}: {error}") from error
    previous = with_previous_stage(find_run(folder, None, checkpoint), checkpoint)
    return dataclasses.replace(run, previous=ModelDescription(folder, (previous,)))


def find_model(
    run_dir: str | os.PathLike, folds: Sequence[str] | None = None, checkpoint: str = "final"
) -> ModelDescription:
    """The model of one run folder: its folds (``find_run``) and, for a cascade stage, its previous stage."""
    run = with_previous_stage(find_run(run_dir, folds, checkpoint), checkpoint)
    return ModelDescription(run.run_dir, (run,))


def find_instructed_runs(workspace: Workspace, dataset: str, checkpoint: str = "final") -> ModelDescription:
    """The model ``WORKSPACE/DATASET/inference_instructions.json`` names: its runs (each cascade stage with its
    previous stage), its folds and its postprocessing.

    Args:
        workspace: the workspace; the instructions' run folders are relative to it.
        dataset: the dataset name (its folder in the workspace).
        checkpoint: ``final`` or ``best``, for every fold.

    Raises:
        RunError: no instructions file, or a run, fold or checkpoint it names is missing, or the runs do not fit.
        PostprocessingError: the instructions file is malformed.
    """
    files = workspace.dataset(dataset)
    path = files.instructions
    if not files.folder.is_dir():
        known = sorted(p.parent.name for p in workspace.root.glob(f"*/{path.name}"))
        raise RunError(
            f"{files.folder}: no dataset {dataset!r} in the workspace (datasets with instructions: "
            f"{', '.join(known) or 'none'})"
        )
    if not path.is_file():
        raise RunError(f"{path}: no inference instructions; run find-best on {dataset} first")
    instructions = load_instructions(path)
    folds = [str(fold) for fold in instructions.folds]
    runs = []
    for relative in instructions.runs:
        try:
            runs.append(with_previous_stage(find_run(Path(workspace.root) / relative, folds, checkpoint), checkpoint))
        except RunError as error:
            raise RunError(f"{path}: run {relative!r}: {error}") from error
    check_compatible(runs, path)
    return ModelDescription(path, tuple(runs), list(instructions.postprocessing))


def find_described_model(
    root: Path, described: Sequence[dict[str, Any]], postprocessing: Sequence[dict], checkpoint: str, source: Path
) -> ModelDescription:
    """The model an exported model's manifest describes (``ModelDescription.describe``), its runs found in ``root``.

    Args:
        root: the folder the runs' names are relative to (an extracted model's workspace).
        described: ``[{"run": FOLDER, "folds": [...], "previous": [...]}]``; "previous" for every cascade stage.
        postprocessing: steps applied after averaging.
        checkpoint: ``final`` or ``best``, for every fold.
        source: the file that describes the model, for messages.

    Raises:
        RunError: a run, fold or checkpoint is missing, a cascade stage has no previous stage, or the runs do not fit.
    """
    runs = []
    for entry in described:
        try:
            run = find_run(Path(root) / entry["run"], entry["folds"], checkpoint)
        except RunError as error:
            raise RunError(f"{source}: run {entry['run']!r}: {error}") from error
        if "previous" in entry:
            previous = find_described_model(root, entry["previous"], [], checkpoint, source)
            run = dataclasses.replace(run, previous=previous)
        elif run.plan.previous_stage is not None:
            raise RunError(
                f"{source}: run {entry['run']!r} is a cascade stage after {run.plan.previous_stage!r}, and no "
                "previous stage is given for it"
            )
        runs.append(run)
    check_compatible(runs, source)
    return ModelDescription(source, tuple(runs), list(postprocessing))
