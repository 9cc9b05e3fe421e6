"""Preprocessing of every training case of a dataset into a folder, in a process pool.

A configuration's preprocessed folder (the workspace layout names it) holds one npz and one JSON per case (see
``mambaseg.preprocessing.storage``) and ``preprocessing.json``, the spec the cases were made with. A
re-run skips finished cases unless ``force`` is set or the spec changed.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mambaseg.data.dataset import Case, Dataset
from mambaseg.io.atomic import write_text_atomically
from mambaseg.io.progress import Progress, as_progress
from mambaseg.preprocessing.case import PreprocessingSpec, class_locations, preprocess_case
from mambaseg.preprocessing.normalization import ChannelNormalization
from mambaseg.preprocessing.storage import is_finished, save_case

if TYPE_CHECKING:
    from mambaseg.planning.plans import Plans

logger = logging.getLogger(__name__)

SPEC_FILE = "preprocessing.json"


@dataclass(frozen=True)
class PreprocessSummary:
    """What a run of ``preprocess_cases`` did."""

    folder: Path
    processed: tuple[str, ...]
    skipped: tuple[str, ...]


def foreground_labels(dataset: Dataset) -> list[int]:
    """Label values to locate for oversampling: every declared value except background and ``ignore``."""
    values: set[int] = set()
    for label in dataset.labels.values():
        values.update(label if isinstance(label, list) else [label])
    return sorted(values - {0} - ({dataset.ignore_label} if dataset.ignore_label is not None else set()))


def spec_to_dict(spec: PreprocessingSpec) -> dict[str, Any]:
    """``spec`` as stored in ``preprocessing.json``."""
    return {
        "target_spacing": list(spec.target_spacing),
        "normalization": [channel.to_dict() for channel in spec.normalization],
        "transpose_forward": None if spec.transpose_forward is None else list(spec.transpose_forward),
    }


def load_spec(folder: Path) -> PreprocessingSpec:
    """The spec a preprocessed folder was made with, from its ``preprocessing.json``."""
    path = folder / SPEC_FILE
    try:
        values = json.loads(path.read_text())
        transpose = values.get("transpose_forward")
        return PreprocessingSpec(
            tuple(float(s) for s in values["target_spacing"]),
            tuple(ChannelNormalization.from_dict(channel, str(path)) for channel in values["normalization"]),
            None if transpose is None else tuple(transpose),
        )
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: cannot read the preprocessing spec: {error}") from error


def preprocess_dataset(
    dataset: Dataset,
    plans: Plans,
    configuration: str,
    out_dir: Path,
    workers: int | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> PreprocessSummary:
    """Preprocesses the training cases of ``dataset`` for ``configuration`` of ``plans`` into ``out_dir``.

    See ``preprocess_cases`` for the other arguments.
    """
    return preprocess_cases(
        dataset, PreprocessingSpec.from_plans(plans, configuration), out_dir, workers, force, progress
    )


def preprocess_cases(
    dataset: Dataset,
    spec: PreprocessingSpec,
    folder: Path,
    workers: int | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> PreprocessSummary:
    """Preprocesses the training cases of ``dataset`` into ``folder``.

    Args:
        dataset: The dataset; its files are only read.
        spec: Target spacing and normalisation of the configuration.
        folder: Output folder, created if needed.
        workers: Processes; None for one per CPU, 0 or 1 to work in this process.
        force: Redo finished cases too.
        progress: Where to report the cases done (``mambaseg.io.progress``); None for silence.
    """
    folder.mkdir(parents=True, exist_ok=True)
    spec_path = folder / SPEC_FILE
    wanted = spec_to_dict(spec)
    if not force and spec_path.is_file() and json.loads(spec_path.read_text()) != wanted:
        logger.warning("%s: the plans changed since the last run; preprocessing every case again", spec_path)
        force = True
    write_text_atomically(spec_path, json.dumps(wanted, indent=1))
    todo = [case for case in dataset.cases if force or not is_finished(folder, case.name)]
    skipped = tuple(case.name for case in dataset.cases if case not in todo)
    if skipped:
        logger.info("%s: %d cases already preprocessed, skipped", folder, len(skipped))
    labels = foreground_labels(dataset)
    if todo:
        _run_all(todo, spec, labels, folder, workers, as_progress(progress))
        logger.info("%s: preprocessed %d cases", folder, len(todo))
    return PreprocessSummary(folder, tuple(case.name for case in todo), skipped)


def preprocess_and_save(case: Case, spec: PreprocessingSpec, labels: Sequence[int], folder: Path) -> str:
    """Reads, preprocesses and writes one case; returns its name."""
    try:
        data, seg, properties = preprocess_case(case.load_images(), case.load_label(), spec)
    except (ValueError, OSError) as error:
        raise ValueError(f"case {case.name} ({case.image_files[0]}): {error}") from error
    locations = class_locations(seg, labels)
    properties.class_locations = {label: int(coords.shape[0]) for label, coords in locations.items()}
    save_case(folder, case.name, data, seg, properties, locations)
    return case.name


def _run_all(
    cases: list[Case],
    spec: PreprocessingSpec,
    labels: list[int],
    folder: Path,
    workers: int | None,
    progress: Progress,
) -> None:
    workers = min(workers if workers is not None else os.cpu_count() or 1, len(cases))
    with progress.task("preprocessing", len(cases)) as task:
        if workers <= 1:
            for case in cases:
                preprocess_and_save(case, spec, labels, folder)
                task.advance()
            return
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = [pool.submit(preprocess_and_save, case, spec, labels, folder) for case in cases]
            for future in as_completed(futures):
                future.result()
                task.advance()
