"""Preprocessing of every training case of a dataset into a folder, in a process pool.

A configuration's preprocessed folder (the workspace layout names it) holds one npz and one JSON per case (see
``mambaseg.preprocessing.storage``) and ``preprocessing.json``, the spec the cases were made with.

Each case's JSON records what the case was made from (``made_from``): the SHA-256 of every source file's content
(image channels and label, by their path in the dataset folder), of the spec that matters (target spacing,
normalisation, axis order, the labels located for oversampling) and of the code that made it (``code_digest``: the
source of this package, so that a change in cropping, resampling or normalisation code makes the cases again). A
re-run skips a finished case only when that record equals the current one; a case whose sources, spec or code
changed (or that has no record) is made again and the log says which and why. ``force`` redoes every case.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import multiprocessing
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mambaseg.data.dataset import Case, Dataset
from mambaseg.io.atomic import write_text_atomically
from mambaseg.io.progress import Progress, as_progress
from mambaseg.preprocessing.case import PreprocessingSpec, class_locations, preprocess_case
from mambaseg.preprocessing.normalization import ChannelNormalization
from mambaseg.preprocessing.storage import is_finished, read_made_from, save_case

if TYPE_CHECKING:
    from mambaseg.planning.plans import Plans

logger = logging.getLogger(__name__)

SPEC_FILE = "preprocessing.json"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class PreprocessSummary:
    """What a run of ``preprocess_cases`` did; ``redone``: the processed cases that were finished but stale."""

    folder: Path
    processed: tuple[str, ...]
    skipped: tuple[str, ...]
    redone: tuple[str, ...] = ()


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


def file_digest(path: Path) -> str:
    """SHA-256 of the content of ``path``, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def spec_digest(spec: PreprocessingSpec, labels: Sequence[int]) -> str:
    """SHA-256 of what a preprocessed case depends on besides its files: the spec and the labels located."""
    text = json.dumps({"spec": spec_to_dict(spec), "located_labels": [int(v) for v in labels]}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@functools.cache
def code_digest() -> str:
    """SHA-256 of the source of ``mambaseg.preprocessing`` (every module, by name and content): what made a case."""
    digest = hashlib.sha256()
    for module in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(module.name.encode())
        digest.update(module.read_bytes())
    return digest.hexdigest()


def made_from(case: Case, root: Path, spec_sha: str) -> dict[str, Any]:
    """The record of what ``case`` is made from: ``spec_sha``, the code's digest and each source file's digest by its
    path in ``root``."""
    files = [*case.image_files, *([case.label_file] if case.label_file is not None else [])]
    return {
        "spec": spec_sha,
        "code": code_digest(),
        "files": {_relative(path, root): file_digest(path) for path in files},
    }


def stale_reason(recorded: Mapping[str, Any] | None, current: Mapping[str, Any]) -> str | None:
    """Why a case made from ``recorded`` does not match the ``current`` sources (None when it does)."""
    if recorded is None:
        return "it has no record of what it was made from (written by an older mambaseg, or its JSON is unreadable)"
    if recorded.get("spec") != current["spec"]:
        return "the preprocessing spec changed since it was made"
    if recorded.get("code") != current["code"]:
        return "the preprocessing code changed since it was made (another mambaseg, or an edited one)"
    old = recorded.get("files")
    old = old if isinstance(old, dict) else {}
    changed = [path for path, digest in current["files"].items() if path in old and old[path] != digest]
    other = sorted(set(old) ^ set(current["files"]))
    reasons = [f"{', '.join(changed)} changed"] if changed else []
    reasons += [f"its source files differ ({', '.join(other)})"] if other else []
    return "; ".join(reasons) + " since it was made" if reasons else None


def _relative(path: Path, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


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
    recorded = _read_json(spec_path) if spec_path.is_file() else None
    if not force and spec_path.is_file() and recorded != wanted:
        logger.warning("%s: the plans changed since the last run; preprocessing every case again", spec_path)
        force = True
    if recorded != wanted:
        write_text_atomically(spec_path, json.dumps(wanted, indent=1))
    labels = foreground_labels(dataset)
    records = _records(dataset, spec_digest(spec, labels), workers)
    todo, redone = [], []
    for case in dataset.cases:
        if force or not is_finished(folder, case.name):
            todo.append(case)
            continue
        reason = stale_reason(read_made_from(folder, case.name), records[case.name])
        if reason is not None:
            logger.warning("%s: case %s is preprocessed again: %s", folder, case.name, reason)
            todo.append(case)
            redone.append(case.name)
    skipped = tuple(case.name for case in dataset.cases if case not in todo)
    if skipped:
        logger.info("%s: %d cases already preprocessed, skipped", folder, len(skipped))
    if todo:
        _run_all(todo, spec, labels, folder, records, workers, as_progress(progress))
        logger.info("%s: preprocessed %d cases", folder, len(todo))
    return PreprocessSummary(folder, tuple(case.name for case in todo), skipped, tuple(redone))


def preprocess_and_save(
    case: Case,
    spec: PreprocessingSpec,
    labels: Sequence[int],
    folder: Path,
    record: Mapping[str, Any] | None = None,
) -> str:
    """Reads, preprocesses and writes one case; returns its name.

    ``record`` (``made_from``) is what the case is made from; take it before reading the files, so that a file
    changed in between makes the record stale rather than wrong.
    """
    try:
        data, seg, properties = preprocess_case(case.load_images(), case.load_label(), spec)
    except (ValueError, OSError) as error:
        raise ValueError(f"case {case.name} ({case.image_files[0]}): {error}") from error
    locations = class_locations(seg, labels)
    properties.class_locations = {label: int(coords.shape[0]) for label, coords in locations.items()}
    save_case(folder, case.name, data, seg, properties, locations, record)
    return case.name


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _records(dataset: Dataset, spec_sha: str, workers: int | None) -> dict[str, dict[str, Any]]:
    """Every case's ``made_from``; files are hashed in threads (hashlib releases the GIL)."""
    threads = max(1, min(workers if workers else os.cpu_count() or 1, len(dataset.cases), 8))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        records = pool.map(lambda case: made_from(case, dataset.root, spec_sha), dataset.cases)
        return {case.name: record for case, record in zip(dataset.cases, records, strict=True)}


def _run_all(
    cases: list[Case],
    spec: PreprocessingSpec,
    labels: list[int],
    folder: Path,
    records: Mapping[str, Mapping[str, Any]],
    workers: int | None,
    progress: Progress,
) -> None:
    workers = min(workers if workers is not None else os.cpu_count() or 1, len(cases))
    with progress.task("preprocessing", len(cases)) as task:
        if workers <= 1:
            for case in cases:
                preprocess_and_save(case, spec, labels, folder, records[case.name])
                task.advance()
            return
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = [
                pool.submit(preprocess_and_save, case, spec, labels, folder, records[case.name]) for case in cases
            ]
            for future in as_completed(futures):
                future.result()
                task.advance()
