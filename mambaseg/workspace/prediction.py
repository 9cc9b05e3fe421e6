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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mambaseg.data.splits import read_splits
from mambaseg.evaluation.cross_validation import SelectionError
from mambaseg.evaluation.metrics import DEFAULT_TOLERANCE_MM
from mambaseg.evaluation.model_selection import find_best as rank_candidates
from mambaseg.evaluation.summary import evaluate_folders, write_json, write_summary
from mambaseg.inference.batch import (
    BatchSummary,
    parts_from_environment,
)
from mambaseg.inference.ensemble import (
    EnsembleError,
    EnsembleSummary,
    ProbabilityFile,
    average_probability_files,
    write_probabilities,
)
from mambaseg.inference.measurements import MeasurementError, write_evaluation_statistics
from mambaseg.inference.postprocessing import InferenceInstructions, to_labels
from mambaseg.io import write_image
from mambaseg.io.progress import Progress, as_progress
from mambaseg.workspace.layout import EvaluationFiles, FoldFiles, PredictionFolder, Workspace
from mambaseg.workspace.predictor import Predictor, check_paths
from mambaseg.workspace.preparation import DatasetArg, WorkspaceArg, open_dataset, open_workspace
from mambaseg.workspace.reports import dataset_report, without_failing

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
    """Rank the dataset's runs and pairwise ensembles, choose postprocessing, write ``inference_instructions.json``
    and the dataset's ``report.html`` (one that cannot be drawn is a warning, never a failure).

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
    without_failing(f"dataset {files.folder}", lambda: dataset_report(ws, files, instructions.to_dict()))
    return instructions


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


def predict(
    input: str | os.PathLike,
    output: str | os.PathLike,
    model: str | os.PathLike | None = None,
    dataset: str | None = None,
    workspace: WorkspaceArg = None,
    folds: Sequence[str] | None = None,
    checkpoint: str | None = None,
    device: str = "auto",
    mirroring: bool = True,
    step: float | None = None,
    precision: str = "auto",
    compile: bool = False,
    fast: bool = False,
    save_probabilities: bool = False,
    dicom_seg: bool = False,
    segment_codes: str | os.PathLike | None = None,
    overwrite: bool = False,
    num_parts: int | None = None,
    part_id: int | None = None,
    series: str | None = None,
    progress: Progress | None = None,
    statistics: bool = False,
    rtstruct: bool = False,
) -> BatchSummary:
    """Predict masks for new images with one run (``model``) or as find-best chose for a ``dataset``.

    ``Predictor.from_model(...).predict_folder(...)`` (``mambaseg.workspace.predictor``), with the part of the cases
    taken from torchrun where not given.

    Args:
        input: an image file, a folder of images, a DICOM series folder, or a folder of series folders.
        output: the folder for the masks (``CASE.nii.gz`` in each input's geometry); not inside ``input``.
        model: a run folder ``WORKSPACE/DATASET/runs/CONFIGURATION__NETWORK`` (its folds are averaged; a cascade
            stage with its previous stage run), or a zip written by ``export_model`` (predicts as it records;
            extracted once into ``WORKSPACE/exported_models/``), or a ``.pt2`` torch.export program written by
            ``export_model`` (on the CPU; ``mambaseg.workspace.program``).
        dataset: predict with the runs, folds and postprocessing of the dataset's inference instructions.
        workspace: the workspace (with ``dataset``, or a model zip).
        folds: with a run folder, the folds to average (default: every trained fold).
        checkpoint: ``final`` or ``best`` per fold (default: final; for a zip, the kind it holds).
        device: ``auto`` (CUDA when available, else the CPU; a ``.pt2``: the CPU), ``cpu``, ``cuda``, ``cuda:N``
            or ``mps``.
        mirroring: test-time mirroring.
        step: sliding-window step as a fraction of the patch, in [0.1, 1] (default: 0.5; with ``fast`` 0.75).
        precision: ``auto`` (bfloat16 on CPUs that compute it natively, float16 on CUDA, else float32),
            ``float32``, ``bfloat16`` or ``float16``: the networks run under autocast in it; the logits and
            probabilities stay float32, the selective scan computes in float32. A precision the device lacks
            natively is refused.
        compile: ``torch.compile`` the networks (pays once per process; see ``docs/benchmarks.md``).
        fast: no mirroring and step 0.75 (unless ``step`` is given).
        save_probabilities: also write ``CASE.npz`` (float16) and ``CASE.json``.
        dicom_seg: also write a DICOM-SEG for DICOM input.
        segment_codes: with ``dicom_seg``, a JSON file giving labels their coded concepts (see ``load_segment_codes``).
        overwrite: predict again cases whose outputs exist (otherwise they are skipped: running again resumes).
        num_parts: split the cases into this many parts (default: torchrun's world size).
        part_id: the part to predict, 0-based (default: torchrun's rank).
        series: only the DICOM series with this SeriesInstanceUID.
        progress: where to report each case done (default: nowhere).
        statistics: also write ``CASE_statistics.json`` per case (volume, voxels, components and intensities per
            structure; ``mambaseg.inference.measurements``) and ``statistics.csv`` for the output folder.
        rtstruct: also write ``CASE_rtstruct.dcm``, an RT Structure Set, for DICOM input
            (``mambaseg.inference.rtstruct``).
    """
    parts, part = _parts(num_parts, part_id)
    check_paths(Path(input).expanduser(), Path(output).expanduser(), dicom_seg, segment_codes)  # before the model
    predictor = Predictor.from_model(
        model, dataset, workspace, folds, checkpoint, device, precision, mirroring, step, fast, compile
    )
    return predictor.predict_folder(
        input,
        output,
        save_probabilities,
        dicom_seg,
        segment_codes,
        overwrite,
        parts,
        part,
        series,
        progress,
        statistics,
        rtstruct,
    )


def evaluate(
    prediction: str | os.PathLike,
    reference: str | os.PathLike,
    output: str | os.PathLike | None = None,
    labels: Sequence[int] | None = None,
    tolerance_mm: float | Mapping[int, float] = DEFAULT_TOLERANCE_MM,
    ignore_label: int | None = None,
    workers: int = 1,
    statistics: bool = False,
    images: str | os.PathLike | None = None,
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
        statistics: also measure each structure of both masks of every case into ``CASE_statistics.json`` and
            ``statistics.csv`` in the output folder (``mambaseg.inference.measurements``).
        images: folder of the cases' images (``CASE_0000.nii.gz``, ...) whose intensities ``statistics`` measures.

    Returns:
        The summary, and the paths of the JSON and CSV files written.
    """
    if images is not None and not statistics:
        raise MeasurementError(f"images {images}: intensities are measured only with statistics=True")
    prediction, reference = Path(prediction).expanduser(), Path(reference).expanduser()
    if output is None:
        output = prediction if prediction.is_dir() else prediction.parent
    out = Path(output).expanduser()
    summary = evaluate_folders(prediction, reference, labels, tolerance_mm, ignore_label, workers)
    files = EvaluationFiles.in_folder(out)
    write_summary(summary, files.summary, files.table)
    if statistics:
        write_evaluation_statistics(out, summary, None if images is None else Path(images).expanduser())
    return summary, files.summary, files.table


def _ensemble_inputs(inputs: Sequence[str | os.PathLike], output: Path) -> list[PredictionFolder]:
    folders = [PredictionFolder(Path(folder).expanduser()) for folder in inputs]
    if len(folders) < 2:
        raise EnsembleError(f"inputs: give at least two folders of probabilities to average, got {len(folders)}")
    for folder in folders:
        if not folder.folder.is_dir():
            raise EnsembleError(f"inputs: {folder.folder} is not a folder")
        if not folder.probability_cases():
            raise EnsembleError(
                f"inputs: {folder.folder} holds no CASE.npz; predict with save_probabilities, or validate with "
                "validation.save_probabilities=true"
            )
        if folder.folder.resolve() == output.resolve():
            raise EnsembleError(f"output {output}: is one of the input folders, whose masks would be overwritten")
    return folders


def ensemble(
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    overwrite: bool = False,
    save_probabilities: bool = False,
    progress: Progress | None = None,
) -> EnsembleSummary:
    """Average the saved probabilities (``CASE.npz``) of several prediction folders into masks, as nnUNetv2_ensemble.

    The cases present in every folder are averaged; each mask (``OUTPUT/CASE.nii.gz``) gets the case's geometry
    from the ``CASE.json`` sidecar that ``predict(save_probabilities=True)`` writes or, in a fold's
    ``validation/`` folder, from the mask beside the probabilities.

    Args:
        inputs: two or more folders of ``CASE.npz`` files.
        output: the folder for the masks; not one of the inputs.
        overwrite: average again cases whose mask exists (otherwise they are skipped).
        save_probabilities: also write the averaged ``CASE.npz``.
        progress: where to report each case done.

    Raises:
        EnsembleError: fewer than two folders, a folder without probabilities, no case common to all, a case
            without geometry, or probability files whose classes or geometry differ (naming the files).
    """
    output = Path(output).expanduser()
    folders = _ensemble_inputs(inputs, output)
    present = [set(folder.probability_cases()) for folder in folders]
    common = sorted(set.intersection(*present))
    summary = EnsembleSummary(incomplete=sorted(set.union(*present) - set(common)))
    if summary.incomplete:
        log.warning(
            "%d case(s) are not in every folder and are left out: %s",
            len(summary.incomplete),
            ", ".join(summary.incomplete),
        )
    if not common:
        raise EnsembleError(f"inputs: no case has probabilities in every folder ({', '.join(map(str, inputs))})")
    target = PredictionFolder(output)
    with as_progress(progress).task("ensembling", len(common)) as task:
        for case in common:
            mask_file = target.output_mask(case)
            if mask_file.is_file() and not overwrite:
                summary.skipped.append(case)
                task.advance()
                continue
            files = []
            for folder in folders:
                geometry = folder.geometry_source(case)
                if geometry is None:
                    raise EnsembleError(
                        f"{folder.probabilities(case)}: neither {folder.sidecar(case).name} nor a mask of {case!r} "
                        "beside it gives its geometry"
                    )
                files.append(ProbabilityFile(folder.probabilities(case), geometry))
            averaged = average_probability_files(files)
            output.mkdir(parents=True, exist_ok=True)
            if save_probabilities:
                write_probabilities(target.probabilities(case), averaged.probabilities, averaged.regions_class_order)
            mask = to_labels(averaged.probabilities, averaged.regions_class_order)
            write_image(averaged.grid.with_array(mask), mask_file)
            summary.written.append(case)
            task.advance()
    return summary
