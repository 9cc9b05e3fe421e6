"""The run reports in the workspace: each fold's ``report.html`` after its validation, the dataset's after find-best.

Training writes a fold's page when its validation ends, and find-best the dataset's; ``report`` draws them again
from the files (``mambaseg report``). The pages are ``mambaseg.evaluation.run_report``'s; this module reads the
run's files into them. Example::

    from mambaseg import workspace as ms

    ms.report("my_workspace/Hippocampus/runs/3d_fullres__unet_resenc")  # every fold's page
    ms.report("Hippocampus", "my_workspace")  # the dataset's page of what find-best chose
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from mambaseg.data import Dataset, load_dataset
from mambaseg.evaluation.run_report import FoldReport, ReportError, write_dataset_report, write_fold_report
from mambaseg.inference.postprocessing import load_instructions
from mambaseg.planning.checkpoint import load_checkpoint
from mambaseg.workspace.config import saved_config
from mambaseg.workspace.layout import (
    CHECKPOINT_KINDS,
    FOLD_PREFIX,
    RUN_NAME_SEPARATOR,
    DatasetFiles,
    FoldFiles,
    LayoutError,
    RunFiles,
    Workspace,
)
from mambaseg.workspace.preparation import WorkspaceArg, open_workspace
from mambaseg.workspace.runtime import machine_description

log = logging.getLogger(__name__)

SUMMARY_KEYS = ("cases", "mean", "foreground_mean", "metrics", "label_names")


def parameter_count(fold: FoldFiles) -> int | None:
    """The parameters of the fold's network, counted from the weights of its first checkpoint (final, best, latest).

    No registered network holds buffers, so the weights are the parameters; None without a checkpoint.
    """
    for kind in CHECKPOINT_KINDS:
        path = fold.checkpoints.get(kind)
        if path.is_file():
            return sum(tensor.numel() for tensor in load_checkpoint(path).model.values())
    return None


def _json(path: Path) -> Any:
    """The file's content; None when it does not exist.

    Raises:
        ReportError: a file that is not JSON, naming it.
    """
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ReportError(f"{path}: cannot be read as JSON: {error}") from error


def _summary(path: Path) -> dict[str, Any] | None:
    """A validation ``summary.json`` (``mambaseg.evaluation.summary``'s schema); None when it does not exist.

    Raises:
        ReportError: a file that is not JSON or lacks a field of the schema, naming it.
    """
    summary = _json(path)
    if summary is not None and (not isinstance(summary, dict) or any(key not in summary for key in SUMMARY_KEYS)):
        raise ReportError(f"{path}: not a validation summary (it needs {', '.join(SUMMARY_KEYS)}); validate again")
    return summary


def _dataset_of(summary: Mapping[str, Any] | None) -> tuple[Dataset | None, list[str]]:
    """The dataset a validation summary scored against (its ``reference``), or None with the reason as a note."""
    if summary is None:
        return None, []
    if not summary.get("reference"):
        return None, ["overlays: the validation summary names no dataset folder"]
    try:
        return load_dataset(summary["reference"]), []
    except (OSError, ValueError) as error:
        return None, [f"overlays: the dataset cannot be opened: {error}"]


def fold_report(fold: FoldFiles, dataset: Dataset | None = None, device: torch.device | None = None) -> Path:
    """Write the fold's ``report.html`` from its files; returns its path.

    Args:
        fold: the fold.
        dataset: the dataset whose images the overlays show (default: the folder the validation summary names).
        device: the device the fold ran on, with the machine described on the page (default: the CPU).

    Raises:
        ReportError: no ``plan.json`` or ``config.yaml`` (the fold never started training), or unreadable JSON.
        LayoutError: the fold is not in a run folder.
    """
    for path in (fold.plan, fold.config):
        if not path.is_file():
            raise ReportError(f"{path}: missing; the fold has not started training")
    run = RunFiles.parse(fold.folder.parent)
    summary = _summary(fold.validation_summary)
    notes: list[str] = []
    if dataset is None:
        dataset, notes = _dataset_of(summary)
    report = FoldReport(
        title=f"{dataset.name + ': ' if dataset else ''}{run.name} fold {fold.fold}",
        configuration=run.configuration,
        plan=_json(fold.plan),
        config=saved_config(fold.config),
        parameters=parameter_count(fold),
        machine=machine_description(device or torch.device("cpu")),
        metrics=fold.logs.metrics,
        summary=summary,
        times=_json(fold.validation_times),
        cases={case.name: case for case in dataset.cases} if dataset else {},
        notes=notes,
    )
    return write_fold_report(report, fold.report)


def _fold_summary(run: Path, fold: int) -> dict[str, Any] | None:
    """A ranked run's fold's validation summary; None where the run was moved or the summary cannot be read."""
    try:
        return _summary(RunFiles.parse(run).fold(fold).validation_summary)
    except ValueError:  # LayoutError, ReportError: the dataset's page shows the fold as missing
        return None


def dataset_report(workspace: Workspace, files: DatasetFiles, instructions: Mapping[str, Any] | None = None) -> Path:
    """Write the dataset's ``report.html`` of what find-best chose; returns its path.

    Args:
        workspace: the workspace (the instructions name runs relative to it).
        files: the dataset's files.
        instructions: the inference instructions (default: read from ``inference_instructions.json``).

    Raises:
        ReportError: no inference instructions.
        PostprocessingError: instructions that cannot be read.
    """
    if instructions is None:
        if not files.instructions.is_file():
            raise ReportError(f"{files.instructions}: no inference instructions; run find-best first")
        instructions = load_instructions(files.instructions).to_dict()
    runs = dict.fromkeys(run for entry in instructions["ranking"] for run in entry["runs"])  # each once, in order
    folds = {run: {fold: _fold_summary(workspace.root / run, fold) for fold in instructions["folds"]} for run in runs}
    summaries = [summary for by_fold in folds.values() for summary in by_fold.values() if summary]
    label_names = {key: name for summary in summaries for key, name in summary["label_names"].items()}
    return write_dataset_report(instructions, label_names, folds, files.report)


def without_failing(what: str, write: Callable[[], Path]) -> Path | None:
    """``write()``, or None and a warning naming ``what`` and the reason: a report never fails the stage before it."""
    try:
        return write()
    except Exception as error:  # whatever stops the drawing, the trained fold and the chosen model stand
        log.warning("%s: report.html not written: %s: %s", what, type(error).__name__, error)
        return None


def report(target: str | os.PathLike, workspace: WorkspaceArg = None) -> list[Path]:
    """Draw the reports again: every fold's of a run folder, a fold folder's, or a dataset's (by name).

    Args:
        target: a run folder (``.../runs/CONFIGURATION__NETWORK``), a fold folder (``.../fold_K``), or the name of a
            dataset in the workspace (its page of what find-best chose).
        workspace: the workspace (for a dataset name).

    Returns:
        The pages written.

    Raises:
        LayoutError: ``target`` is none of these, naming it.
        ReportError: a run without a trained fold, a fold that never started, a dataset without find-best's
            instructions.
    """
    path = Path(target).expanduser()
    if path.is_dir() and path.name.startswith(FOLD_PREFIX):
        return [fold_report(FoldFiles.parse(path))]
    if path.is_dir() and RUN_NAME_SEPARATOR in path.name:
        folds = [fold for fold in RunFiles.parse(path).folds() if fold.plan.is_file()]
        if not folds:
            raise ReportError(f"{path}: no trained fold (no {FOLD_PREFIX}K/plan.json)")
        return [fold_report(fold) for fold in folds]
    ws = open_workspace(workspace)
    name = str(target)
    if name and name == Path(name).name and name not in (".", "..") and ws.dataset(name).folder.is_dir():
        return [dataset_report(ws, ws.dataset(name))]
    raise LayoutError(
        f"{target}: neither a run folder (CONFIGURATION{RUN_NAME_SEPARATOR}NETWORK), a fold folder "
        f"({FOLD_PREFIX}K) nor the name of a dataset in the workspace {ws.root}"
    )
