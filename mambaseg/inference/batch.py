"""Predicting many cases: background reading and writing, resumable outputs, splitting the work into parts.

While the model predicts one case, a reader thread loads the next and a writer thread saves the
previous one, so at most three cases are in memory. Every output is written to a temporary file in
the output folder and renamed into place, so an interrupted run leaves no half-written file; a case
whose outputs all exist is skipped (unless overwriting), so running the same command again resumes.

Outputs of a case ``NAME``: ``NAME.nii.gz`` (the mask, in the input's geometry); with probabilities
``NAME.npz`` (``probabilities``, float16, (k, *input array shape)) and ``NAME.json`` (classes and
geometry); for DICOM input with DICOM-SEG ``NAME.dcm`` and with RTSTRUCT ``NAME_rtstruct.dcm`` (``rtstruct``);
with statistics ``NAME_statistics.json`` (per structure volume, voxels, components and intensities:
``measurements``) and, for the folder, ``statistics.csv`` rebuilt from every ``*_statistics.json`` there at the
end (so a resumed run's table is complete).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from mambaseg.inference.dicom_seg import SegmentCode, build_dicom_seg
from mambaseg.inference.ensemble import write_probabilities
from mambaseg.inference.inputs import InputCase, check_channels, load_case
from mambaseg.inference.measurements import (
    CASE_STATISTICS_ENDING,
    STATISTICS_TABLE,
    collect_statistics,
    measure_structures,
    write_case_statistics,
    write_statistics_table,
)
from mambaseg.inference.pipeline import Prediction
from mambaseg.inference.rtstruct import build_rtstruct
from mambaseg.io import Image, write_image
from mambaseg.io.atomic import write_atomically
from mambaseg.io.progress import Progress, ProgressTask, as_progress

logger = logging.getLogger(__name__)

MASK, PROBABILITIES, SIDECAR, DICOM_SEG = "mask", "probabilities", "sidecar", "dicom_seg"
STATISTICS, RTSTRUCT = "statistics", "rtstruct"
_ENDINGS = {
    RTSTRUCT: "_rtstruct.dcm",
    MASK: ".nii.gz",
    PROBABILITIES: ".npz",
    SIDECAR: ".json",
    DICOM_SEG: ".dcm",
    STATISTICS: CASE_STATISTICS_ENDING,
}


class CasePredictor(Protocol):
    """What predicts one case: a ``pipeline.Pipeline`` (any form of model)."""

    def predict(self, images: Sequence[Image], keep_probabilities: bool = False) -> Prediction: ...


@dataclass(frozen=True)
class BatchOptions:
    """What to write and whether to replace existing outputs."""

    save_probabilities: bool = False
    dicom_seg: bool = False
    overwrite: bool = False
    statistics: bool = False  # CASE_statistics.json per case and statistics.csv for the folder
    rtstruct: bool = False  # CASE_rtstruct.dcm for DICOM input


@dataclass(frozen=True)
class RunInfo:
    """What the outputs record about the model: its name, channels, class names and their DICOM-SEG codes, and
    for a region-based model the label each region's voxels get."""

    name: str
    channel_names: Mapping[str, str]
    label_names: Mapping[int, str]
    segment_codes: Mapping[int, SegmentCode] = field(default_factory=dict)
    regions_class_order: list[int] | None = None


@dataclass
class BatchSummary:
    """The cases predicted and those skipped because their outputs existed, of part ``part_id`` of ``num_parts``."""

    predicted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    num_parts: int = 1
    part_id: int = 0


def parts_from_environment() -> tuple[int, int]:
    """(number of parts, this part) from torchrun's WORLD_SIZE and RANK; (1, 0) outside torchrun."""
    return int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))


def select_part(cases: Sequence[InputCase], num_parts: int, part_id: int) -> list[InputCase]:
    """Every ``num_parts``-th case by sorted name, starting at ``part_id``."""
    if num_parts < 1 or not 0 <= part_id < num_parts:
        raise ValueError(f"part {part_id} of {num_parts}: needs num_parts >= 1 and 0 <= part_id < num_parts")
    return sorted(cases, key=lambda case: case.name)[part_id::num_parts]


def case_outputs(case: InputCase, output_dir: Path, options: BatchOptions) -> dict[str, Path]:
    """The files a case gets, by kind."""
    kinds = [MASK]
    if options.save_probabilities:
        kinds += [PROBABILITIES, SIDECAR]
    if options.dicom_seg and case.kind == "dicom":
        kinds.append(DICOM_SEG)
    if options.rtstruct and case.kind == "dicom":
        kinds.append(RTSTRUCT)
    if options.statistics:
        kinds.append(STATISTICS)
    return {kind: output_dir / f"{case.name}{_ENDINGS[kind]}" for kind in kinds}


def _sidecar(case: InputCase, mask: Image, run: RunInfo, n_classes: int) -> dict:
    return {
        "case": case.name,
        "sources": [str(s) for s in case.sources],
        "model": run.name,
        "classes": [run.label_names.get(k, f"label {k}") for k in range(n_classes)]
        if run.regions_class_order is None
        else [f"region {k} (painted as label {label})" for k, label in enumerate(run.regions_class_order)],
        "array_axes": "(class, *image array axes), image axes as in the mask: (z, y, x)",
        "shape": list(mask.array.shape),
        "spacing": list(mask.spacing),
        "origin": list(mask.origin),
        "direction": list(mask.direction),
    }


def write_outputs(
    case: InputCase, prediction: Prediction, outputs: Mapping[str, Path], run: RunInfo, images: Sequence[Image]
) -> None:
    """Write the requested outputs of one case (``images``: its channels, for the statistics), the mask last."""
    mask = prediction.mask
    if STATISTICS in outputs:
        measured = measure_structures(mask, run.label_names, images)
        write_case_statistics(outputs[STATISTICS], case.name, measured)
    if PROBABILITIES in outputs:
        write_probabilities(outputs[PROBABILITIES], prediction.probabilities, run.regions_class_order)
    if SIDECAR in outputs:
        n_classes = len(prediction.probabilities) if prediction.probabilities is not None else len(run.label_names)
        text = json.dumps(_sidecar(case, mask, run, n_classes), indent=2) + "\n"
        write_atomically(outputs[SIDECAR], lambda f: f.write(text.encode()))
    if DICOM_SEG in outputs:
        seg = build_dicom_seg(
            mask, case.sources[0], case.series_uid or "", run.label_names, run.name, run.segment_codes
        )
        write_atomically(outputs[DICOM_SEG], seg.save_as)
    if RTSTRUCT in outputs:
        structures = build_rtstruct(mask, case.sources[0], case.series_uid or "", run.label_names, run.name)
        write_atomically(outputs[RTSTRUCT], structures.save_as)
    if MASK in outputs:
        write_image(mask, outputs[MASK])


def _write(
    case: InputCase,
    prediction: Prediction,
    outputs: Mapping[str, Path],
    run: RunInfo,
    images: Sequence[Image],
    task: ProgressTask,
) -> None:
    write_outputs(case, prediction, outputs, run, images)
    task.advance()


def _finished(path: Path) -> bool:
    """An output counts as done when it is a non-empty file: outputs are written whole (atomically), so an empty
    or odd one was put there by something else and is predicted again."""
    return path.is_file() and path.stat().st_size > 0


def _read(case: InputCase, run: RunInfo) -> list[Image]:
    images = load_case(case)
    check_channels(case, run.channel_names, images)
    return images


def predict_cases(
    predictor: CasePredictor,
    cases: Sequence[InputCase],
    output_dir: str | Path,
    run: RunInfo,
    options: BatchOptions | None = None,
    progress: Progress | None = None,
) -> BatchSummary:
    """Predict ``cases`` into ``output_dir``, skipping those whose outputs exist unless overwriting.

    Args:
        predictor: the model(s): one run's folds, or the runs of an ensemble.
        cases: what to predict.
        output_dir: created when a case is to be written.
        run: the model's name, channels and class names.
        options: probabilities, DICOM-SEG, overwrite.
        progress: where to report each case done or skipped.
    """
    with as_progress(progress).task("predicting", len(cases)) as task:
        return _predict_cases(predictor, cases, Path(output_dir), run, options or BatchOptions(), task)


def _predict_cases(
    predictor: CasePredictor,
    cases: Sequence[InputCase],
    output_dir: Path,
    run: RunInfo,
    options: BatchOptions,
    task: ProgressTask,
) -> BatchSummary:
    summary = BatchSummary()
    todo: list[tuple[InputCase, dict[str, Path]]] = []
    for case in cases:
        outputs = case_outputs(case, output_dir, options)
        missing = outputs if options.overwrite else {k: p for k, p in outputs.items() if not _finished(p)}
        if missing:
            todo.append((case, missing))
        else:
            summary.skipped.append(case.name)
            task.advance()
    if summary.skipped:
        logger.info("%d case(s) already predicted in %s, skipped", len(summary.skipped), output_dir)
    if todo:
        output_dir.mkdir(parents=True, exist_ok=True)
        _predict_todo(predictor, todo, run, task, summary)
    if options.statistics and output_dir.is_dir():
        write_statistics_table(output_dir / STATISTICS_TABLE, collect_statistics(output_dir))
    return summary


def _predict_todo(
    predictor: CasePredictor,
    todo: list[tuple[InputCase, dict[str, Path]]],
    run: RunInfo,
    task: ProgressTask,
    summary: BatchSummary,
) -> None:
    """Predict the cases of ``todo``, reading the next and writing the previous one in the background."""
    with ThreadPoolExecutor(1, thread_name_prefix="read") as reader, ThreadPoolExecutor(1, "write") as writer:
        next_images = reader.submit(_read, todo[0][0], run)
        writing: Future | None = None
        for i, (case, outputs) in enumerate(todo):
            images = next_images.result()
            if i + 1 < len(todo):
                next_images = reader.submit(_read, todo[i + 1][0], run)
            prediction = predictor.predict(images, keep_probabilities=PROBABILITIES in outputs)
            channels = images if STATISTICS in outputs else []  # measured after writing; else freed now
            del images
            if writing is not None:
                writing.result()
            writing = writer.submit(_write, case, prediction, outputs, run, channels, task)
            summary.predicted.append(case.name)
        writing.result()
