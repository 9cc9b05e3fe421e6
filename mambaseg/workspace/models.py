"""Trained models in the workspace: one run's folds, or the runs that find-best's instructions name."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from mambaseg.inference.ensemble import InstructedRuns, check_compatible
from mambaseg.inference.postprocessing import load_instructions
from mambaseg.inference.runs import RunError, TrainedRun, load_trained_run
from mambaseg.workspace.layout import FOLD_PREFIX, FoldFiles, LayoutError, RunFiles, Workspace


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


def find_instructed_runs(workspace: Workspace, dataset: str, checkpoint: str = "final") -> InstructedRuns:
    """The runs ``WORKSPACE/DATASET/inference_instructions.json`` names, with its folds and postprocessing.

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
    return find_runs(
        workspace, [(relative, folds) for relative in instructions.runs], instructions.postprocessing, checkpoint, path
    )


def find_runs(
    workspace: Workspace,
    runs: Sequence[tuple[str, Sequence[str]]],
    postprocessing: Sequence[dict],
    checkpoint: str,
    source: Path,
) -> InstructedRuns:
    """The runs (folders relative to ``workspace``, each with its folds) to average, then ``postprocessing``.

    Args:
        workspace: the workspace (or an extracted exported model) holding the runs.
        runs: ``(run folder relative to the workspace, fold names)`` of each run.
        postprocessing: steps applied after averaging.
        checkpoint: ``final`` or ``best``, for every fold.
        source: the file that names the runs (inference instructions, or a model's manifest), for messages.

    Raises:
        RunError: a run, fold or checkpoint is missing, or the runs do not fit together.
    """
    found = []
    for relative, folds in runs:
        try:
            found.append(find_run(Path(workspace.root) / relative, folds, checkpoint))
        except RunError as error:
            raise RunError(f"{source}: run {relative!r}: {error}") from error
    check_compatible(found, source)
    return InstructedRuns(source, tuple(found), list(postprocessing))
