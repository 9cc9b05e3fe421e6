"""After training: choose what to predict with (find-best), predict new images, evaluate masks.

Example::

    from mambaseg import workspace as ms

    ms.find_best("Task04_Hippocampus", "my_workspace")
    ms.predict("scans/", "masks/", dataset="Task04_Hippocampus", workspace="my_workspace")
    summary = ms.evaluate("masks/", "references/")
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from mambaseg.data.splits import read_splits
from mambaseg.evaluation.cross_validation import SelectionError
from mambaseg.evaluation.metrics import DEFAULT_TOLERANCE_MM
from mambaseg.evaluation.model_selection import find_best as rank_candidates
from mambaseg.evaluation.summary import evaluate_folders, write_json, write_summary
from mambaseg.inference.batch import (
    BatchOptions,
    BatchSummary,
    CasePredictor,
    RunInfo,
    parts_from_environment,
    predict_cases,
    select_part,
)
from mambaseg.inference.dicom_seg import check_source_series
from mambaseg.inference.ensemble import make_ensemble_predictor
from mambaseg.inference.inputs import InputCase, check_channels, check_output_folder, discover_cases
from mambaseg.inference.postprocessing import InferenceInstructions
from mambaseg.io.progress import Progress
from mambaseg.ops.scan_dispatch import check_backend_environment
from mambaseg.workspace.cascade import make_chained_predictor
from mambaseg.workspace.layout import EvaluationFiles, FoldFiles, Workspace
from mambaseg.workspace.models import find_instructed_runs, find_run
from mambaseg.workspace.preparation import DatasetArg, WorkspaceArg, open_dataset, open_workspace
from mambaseg.workspace.runtime import resolve_device

log = logging.getLogger(__name__)


def validated_runs(workspace: Workspace, dataset_name: str) -> dict[str, dict[int, FoldFiles]]:
    """Run folder name -> numbered fold -> its files, for every fold whose validation finished."""
    found = {}
    for run in workspace.dataset(dataset_name).runs():
        folds = {int(f.fold): f for f in run.folds() if f.is_numbered and f.validation_summary.is_file()}
        if folds:
            found[run.name] = folds
    return found


def find_best(
    dataset: DatasetArg, workspace: WorkspaceArg = None, folds: Sequence[int] | None = None, ensembles: bool = True
) -> InferenceInstructions:
    """Rank the dataset's runs and pairwise ensembles, choose postprocessing, write ``inference_instructions.json``.

    Args:
        dataset: folder, name under ``WORKSPACE/raw``, or ``Dataset``.
        workspace: the workspace.
        folds: folds to compare on; default: all folds of ``splits.json`` (or those every run has).
        ensembles: also rank ensembles of two runs where their validation probabilities exist.

    Raises:
        SelectionError: no validated run, missing validation files, or unusable labels.
        SplitsError: a malformed ``splits.json``.
    """
    ws = open_workspace(workspace)
    loaded = open_dataset(dataset, ws)
    files = ws.dataset(loaded.name)
    if not files.splits.is_file():
        raise SelectionError(f"{files.splits}: no cross-validation splits; train the folds first")
    splits = read_splits(files.splits, loaded.case_names())
    runs = validated_runs(ws, loaded.name)
    if not runs:
        raise SelectionError(f"{files.runs_folder}: no run with a validated fold (fold_K/validation/)")

    def reference(run: str) -> str:
        return ws.relative(files.runs_folder / run)

    instructions = rank_candidates(loaded, splits, runs, folds, ensembles, reference)
    write_json(files.instructions, instructions.to_dict())
    return instructions


MIN_STEP = 0.1  # 10 windows per patch length and axis: 1000 times the windows of step 1 in 3-D


def _check_writable(output: Path) -> None:
    """ValueError naming ``output`` (or the folder that would hold it) when masks cannot be written there."""
    existing = output
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"output {output}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"output {output}: {existing} is not writable")


def _parts(num_parts: int | None, part_id: int | None) -> tuple[int, int]:
    """The part of the cases to predict: given, else torchrun's (WORLD_SIZE, RANK)."""
    env_parts, env_rank = parts_from_environment()
    num_parts = env_parts if num_parts is None else num_parts
    source = ""
    if part_id is None:
        part_id, source = env_rank, " (torchrun's RANK)"
    if num_parts < 1 or not 0 <= part_id < num_parts:
        raise ValueError(f"num_parts {num_parts}, part_id {part_id}{source}: needs 0 <= part_id < num_parts")
    return num_parts, part_id


def _model(
    workspace: Workspace,
    model: str | os.PathLike | None,
    dataset: str | None,
    folds: Sequence[str] | None,
    checkpoint: str,
) -> tuple[Callable[..., CasePredictor], RunInfo]:
    """What ``model`` or ``dataset`` names, checked on disk: a function building its predictor, and its record."""
    if (model is None) == (dataset is None):
        raise ValueError("give one of model (a run folder) and dataset (predict as find-best chose)")
    if model is not None:
        trained = find_run(model, folds, checkpoint)
        return partial(make_chained_predictor, trained, checkpoint), RunInfo(
            trained.run_dir.name, trained.plans.channel_names, trained.label_names
        )
    if folds:
        raise ValueError(f"folds {' '.join(folds)}: with dataset the instructions choose the folds; give a model")
    instructed = find_instructed_runs(workspace, dataset, checkpoint)
    first = instructed.runs[0]
    return partial(make_ensemble_predictor, instructed), RunInfo(
        instructed.name, first.plans.channel_names, first.label_names
    )


def _check_dicom_seg_sources(cases: list[InputCase]) -> None:
    dicom = [case for case in cases if case.kind == "dicom"]
    if not dicom:
        log.warning("DICOM-SEG output applies to DICOM input only; none of the cases is DICOM")
    for case in dicom:
        check_source_series(case.sources[0], case.series_uid or "")


def predict(
    input: str | os.PathLike,
    output: str | os.PathLike,
    model: str | os.PathLike | None = None,
    dataset: str | None = None,
    workspace: WorkspaceArg = None,
    folds: Sequence[str] | None = None,
    checkpoint: str = "final",
    device: str = "auto",
    mirroring: bool = True,
    step: float = 0.5,
    save_probabilities: bool = False,
    dicom_seg: bool = False,
    overwrite: bool = False,
    num_parts: int | None = None,
    part_id: int | None = None,
    series: str | None = None,
    progress: Progress | None = None,
) -> BatchSummary:
    """Predict masks for new images with one run (``model``) or as find-best chose for a ``dataset``.

    Args:
        input: an image file, a folder of images, a DICOM series folder, or a folder of series folders.
        output: the folder for the masks (``CASE.nii.gz`` in each input's geometry); not inside ``input``.
        model: a run folder ``WORKSPACE/DATASET/runs/CONFIGURATION__NETWORK``; its folds are averaged.
        dataset: predict with the runs, folds and postprocessing of the dataset's inference instructions.
        workspace: the workspace (with ``dataset``).
        folds: with ``model``, the folds to average (default: every trained fold).
        checkpoint: ``final`` or ``best`` per fold.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        mirroring: test-time mirroring.
        step: sliding-window step as a fraction of the patch, in (0, 1].
        save_probabilities: also write ``CASE.npz`` (float16) and ``CASE.json``.
        dicom_seg: also write a DICOM-SEG for DICOM input.
        overwrite: predict again cases whose outputs exist (otherwise they are skipped: running again resumes).
        num_parts: split the cases into this many parts (default: torchrun's world size).
        part_id: the part to predict, 0-based (default: torchrun's rank).
        series: only the DICOM series with this SeriesInstanceUID.
        progress: where to report each case done (default: nowhere).
    """
    if not MIN_STEP <= step <= 1:
        raise ValueError(f"step {step}: must be between {MIN_STEP} and 1 (a fraction of the patch)")
    torch_device = resolve_device(device)
    check_backend_environment(torch_device)
    input, output = Path(input).expanduser(), Path(output).expanduser()
    ws = open_workspace(workspace) if dataset is not None else None
    parts, part = _parts(num_parts, part_id)
    check_output_folder(input, output)
    _check_writable(output)
    build_predictor, info = _model(ws, model, dataset, folds, checkpoint)
    cases = discover_cases(input, series, len(info.channel_names))
    for case in cases:
        check_channels(case, info.channel_names)
    cases = select_part(cases, parts, part)
    if dicom_seg:
        _check_dicom_seg_sources(cases)
    predictor = build_predictor(torch_device, mirroring, step)
    options = BatchOptions(save_probabilities, dicom_seg, overwrite)
    summary = predict_cases(predictor, cases, output, info, options, progress)
    summary.num_parts, summary.part_id = parts, part
    return summary


def evaluate(
    prediction: str | os.PathLike,
    reference: str | os.PathLike,
    output: str | os.PathLike | None = None,
    labels: Sequence[int] | None = None,
    tolerance_mm: float | Mapping[int, float] = DEFAULT_TOLERANCE_MM,
    ignore_label: int | None = None,
    workers: int = 1,
) -> tuple[dict[str, Any], Path, Path]:
    """Score predicted masks against references (Dice, HD95, surface Dice); write ``summary.json`` and a CSV.

    Args:
        prediction: folder of predicted masks (or one mask file).
        reference: folder of reference masks matched by file name (or one file).
        output: folder for the summary (default: the prediction folder).
        labels: labels to score (default: every non-zero label found).
        tolerance_mm: surface Dice tolerance, for all labels or per label.
        ignore_label: reference value whose voxels are not scored.
        workers: processes scoring cases.

    Returns:
        The summary, and the paths of the JSON and CSV files written.
    """
    prediction, reference = Path(prediction).expanduser(), Path(reference).expanduser()
    if output is None:
        output = prediction if prediction.is_dir() else prediction.parent
    out = Path(output).expanduser()
    summary = evaluate_folders(prediction, reference, labels, tolerance_mm, ignore_label, workers)
    files = EvaluationFiles.in_folder(out)
    write_summary(summary, files.summary, files.table)
    return summary, files.summary, files.table
