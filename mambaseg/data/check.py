"""Validation of a dataset folder: every problem reported at once, each with its file.

The images are read in a process pool, one case at a time per worker; nothing is written.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mambaseg.data.dataset import Case, Dataset
from mambaseg.io import ChannelFilesError, Image, geometry_differences
from mambaseg.io.progress import Progress, as_progress

logger = logging.getLogger(__name__)

ERROR = "error"
WARNING = "warning"
_MAX_LISTED = 3


@dataclass(frozen=True)
class Problem:
    """One finding: the file it concerns, what is wrong, and whether it is an ``error`` or a ``warning``."""

    file: Path
    message: str
    severity: str = ERROR


@dataclass
class CheckReport:
    """All problems found in a dataset; ``ok`` when none of them is an error."""

    root: Path
    n_cases: int
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [problem for problem in self.problems if problem.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [problem for problem in self.problems if problem.severity == WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors

    def display_path(self, path: Path) -> str:
        """``path`` relative to the dataset folder where it lies inside it."""
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def format(self) -> str:
        """One line per problem, then a summary line."""
        lines = [f"{p.severity.upper():7} {self.display_path(p.file)}: {p.message}" for p in self.problems]
        lines.append(
            f"{self.root}: {self.n_cases} cases checked, {len(self.errors)} errors, {len(self.warnings)} warnings"
        )
        return "\n".join(lines)


@dataclass
class _CaseSummary:
    problems: list[Problem]
    n_channels: int | None = None
    ndim: int | None = None
    labels_found: frozenset[int] = frozenset()


def check_dataset(dataset: Dataset, max_workers: int | None = None, progress: Progress | None = None) -> CheckReport:
    """Checks ``dataset.json`` and every case, reading the images and labels; modifies nothing.

    Args:
        dataset: The dataset to check.
        max_workers: Processes reading cases; None for one per CPU, 0 or 1 to read in this process.
        progress: Where to report the cases read (``mambaseg.io.progress``); None for silence.

    Geometries (a label and its image, the channels of a case) are compared with ``mambaseg.io.geometry_differences``.
    """
    report = CheckReport(dataset.root, len(dataset.cases))
    report.problems += _check_description(dataset)
    report.problems += _check_paths(dataset)
    report.problems += _check_unlisted_files(dataset)
    declared = _declared_values(dataset)
    all_cases = dataset.cases + dataset.test_images
    summaries = _map_cases(all_cases, declared, max_workers, as_progress(progress))
    for summary in summaries:
        report.problems += summary.problems
    report.problems += _check_consistency(dataset, all_cases, summaries)
    report.problems += _check_unused_labels(dataset, summaries)
    logger.debug("checked %s: %d problems", dataset.root, len(report.problems))
    return report


def _check_description(dataset: Dataset) -> list[Problem]:
    json_path = dataset.dataset_json
    problems = []
    duplicates = [name for name, count in Counter(dataset.case_names()).items() if count > 1]
    if duplicates:
        problems.append(Problem(json_path, f"case names listed more than once: {duplicates}"))
    if not dataset.cases:
        problems.append(Problem(json_path, "no training cases"))
    values = [value for value in dataset.labels.values() if isinstance(value, int)]
    if dataset.labels.get("background") != 0:
        problems.append(Problem(json_path, f"label 'background' must be 0, got {dataset.labels.get('background')}"))
    repeated = sorted(value for value, count in Counter(values).items() if count > 1)
    if repeated:
        problems.append(Problem(json_path, f"label values given to more than one name: {repeated}"))
    if dataset.ignore_label is not None and dataset.ignore_label != max(values):
        problems.append(Problem(json_path, f"the 'ignore' label ({dataset.ignore_label}) must be the highest value"))
    regular = sorted(set(values) - {dataset.ignore_label})
    if not dataset.has_regions and regular != list(range(len(regular))):
        problems.append(Problem(json_path, f"label values must be consecutive 0..{len(regular) - 1}, got {regular}"))
    return problems


def _check_paths(dataset: Dataset) -> list[Problem]:
    """Listed files (or the targets of symlinks) must lie inside the dataset folder."""
    root = dataset.root.resolve()
    problems = []
    for case in dataset.cases + dataset.test_images:
        for path in _case_files(case):
            resolved = path.resolve()
            if not resolved.is_relative_to(root):
                problems.append(Problem(path, f"resolves to {resolved}, outside the dataset folder {root}"))
    return problems


def _check_unlisted_files(dataset: Dataset) -> list[Problem]:
    """Files in imagesTr, labelsTr or imagesTs that belong to no case (a typo in a name, a missing label)."""
    listed = {path.resolve() for case in dataset.cases + dataset.test_images for path in _case_files(case)}
    problems = []
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        directory = dataset.root / folder
        if not directory.is_dir():
            continue
        unlisted = sorted(
            path.name
            for path in directory.iterdir()
            if path.name.endswith(dataset.file_ending)
            and not path.name.startswith(".")
            and path.resolve() not in listed
        )
        if unlisted:
            examples = ", ".join(unlisted[:_MAX_LISTED]) + (", ..." if len(unlisted) > _MAX_LISTED else "")
            message = f"{len(unlisted)} files belong to no case and are ignored: {examples}"
            problems.append(Problem(directory, message, WARNING))
    return problems


def _declared_values(dataset: Dataset) -> frozenset[int]:
    values: set[int] = set()
    for value in dataset.labels.values():
        values.update(value if isinstance(value, list) else [value])
    return frozenset(values)


def _map_cases(
    cases: tuple[Case, ...], declared: frozenset[int], max_workers: int | None, progress: Progress
) -> list[_CaseSummary]:
    """``_check_case`` over the cases, in a process pool unless ``max_workers`` is 0 or 1; results in case order."""
    workers = min(max_workers if max_workers is not None else os.cpu_count() or 1, len(cases))
    with progress.task("checking cases", len(cases)) as task:
        if workers <= 1:
            summaries = []
            for case in cases:
                summaries.append(_check_case(case, declared))
                task.advance()
            return summaries
        results: dict[int, _CaseSummary] = {}
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = {pool.submit(_check_case, case, declared): index for index, case in enumerate(cases)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                task.advance()
        return [results[index] for index in range(len(cases))]


def _check_case(case: Case, declared: Iterable[int]) -> _CaseSummary:
    """Reads one case and checks its files: presence, readability, finite voxels, geometry, label values."""
    problems = [Problem(path, "file not found") for path in _case_files(case) if not path.exists()]
    summary = _CaseSummary(problems)
    images = None
    if all(path.exists() for path in case.image_files):
        try:
            images = case.load_images()
        except ChannelFilesError as error:
            problems.append(Problem(error.path, error.reason))
        except Exception as error:  # a checker reports whatever a reader raises, and goes on
            problems.append(Problem(case.image_files[0], f"cannot be read: {_describe(error, case.image_files[0])}"))
    if images:
        summary.n_channels = len(images)
        summary.ndim = images[0].ndim
        problems += _check_images(case, images)
    if case.label_file is not None and case.label_file.exists():
        try:
            label = case.load_label()
        except ChannelFilesError as error:
            problems.append(Problem(error.path, error.reason))
        except Exception as error:  # a checker reports whatever a reader raises, and goes on
            problems.append(Problem(case.label_file, f"cannot be read: {_describe(error, case.label_file)}"))
        else:
            problems += _check_label(case.label_file, label, images[0] if images else None, frozenset(declared))
            summary.labels_found = frozenset(int(value) for value in np.unique(label.array) if value == np.round(value))
    return summary


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _check_images(case: Case, images: list[Image]) -> list[Problem]:
    problems = []
    for channel, image in enumerate(images):
        file = _channel_file(case, channel)
        where = f"channel {channel}: " if len(case.image_files) < len(images) else ""
        if np.issubdtype(image.array.dtype, np.floating) or np.issubdtype(image.array.dtype, np.complexfloating):
            bad = int(image.array.size - np.count_nonzero(np.isfinite(image.array)))
            if bad:
                problems.append(Problem(file, f"{where}{bad} voxels are NaN or infinite"))
            elif image.array.size and np.abs(image.array).max() > _FLOAT32_MAX:
                low, high = float(image.array.min()), float(image.array.max())
                problems.append(Problem(file, f"{where}values from {low:g} to {high:g} exceed the float32 range"))
        if channel > 0:
            for difference in geometry_differences(image, images[0]):
                channel_0 = _channel_file(case, 0).name
                problems.append(Problem(file, f"{where}{difference.describe()} of channel 0 ({channel_0})"))
    return problems


def _check_label(file: Path, label: Image, image: Image | None, declared: frozenset[int]) -> list[Problem]:
    problems = []
    if image is not None:
        problems += [Problem(file, f"{d.describe()} of the image") for d in geometry_differences(label, image)]
    values = np.unique(label.array)
    if not np.issubdtype(values.dtype, np.integer):
        fractional = values[values != np.round(values)]
        if fractional.size:
            shown = ", ".join(f"{v:g}" for v in fractional[:_MAX_LISTED])
            return [*problems, Problem(file, f"label values must be integers, found {shown}")]
    found = {int(value) for value in values}
    undeclared = sorted(found - declared)
    if undeclared:
        problems.append(Problem(file, f"label values {undeclared} are not declared in dataset.json"))
    if not found - {0}:
        problems.append(Problem(file, "label map has no foreground (only background)", WARNING))
    return problems


def _check_unused_labels(dataset: Dataset, summaries: list[_CaseSummary]) -> list[Problem]:
    """A warning for each declared label that no training case's label map contains: the network would be trained
    for a class it never sees (a typo in ``dataset.json``, or cases left out)."""
    found = frozenset().union(*(summary.labels_found for summary in summaries[: len(dataset.cases)]))
    if not found:
        return []  # no label map was read: the errors about them say why
    unused = [
        (name, value)
        for name, value in dataset.labels.items()
        if isinstance(value, int) and value > 0 and value != dataset.ignore_label and value not in found
    ]
    return [
        Problem(
            dataset.dataset_json,
            f"label {name!r} ({value}) is declared but no training case's label map contains it; the network would "
            "learn a class it never sees",
            WARNING,
        )
        for name, value in unused
    ]


def _check_consistency(dataset: Dataset, cases: tuple[Case, ...], summaries: list[_CaseSummary]) -> list[Problem]:
    """Checks between cases: channel counts against ``channel_names``, and 2-D and 3-D cases mixed."""
    problems = []
    n_declared = len(dataset.channel_names)
    for case, summary in zip(cases, summaries, strict=True):
        if summary.n_channels is not None and summary.n_channels != n_declared:
            message = f"{summary.n_channels} channels, but dataset.json declares {n_declared}: {dataset.channel_names}"
            problems.append(Problem(case.image_files[0], message + _channel_hint(dataset, case, summary.n_channels)))
    dims = Counter(summary.ndim for summary in summaries if summary.ndim is not None)
    if len(dims) > 1:
        usual = dims.most_common(1)[0][0]
        for case, summary in zip(cases, summaries, strict=True):
            if summary.ndim is not None and summary.ndim != usual:
                message = f"a {summary.ndim}-D image among {usual}-D ones: 2-D and 3-D cases cannot be mixed"
                problems.append(Problem(case.image_files[0], message))
    return problems


def _channel_hint(dataset: Dataset, case: Case, n_found: int) -> str:
    """What would make a case of one file fit ``channel_names``."""
    n_declared = len(dataset.channel_names)
    if len(case.image_files) != 1:
        return ""
    if n_found > n_declared:
        return '; channel_names needs one entry per channel of the file, e.g. {"0": "R", "1": "G", "2": "B"} for RGB'
    name, ending = case.name, dataset.file_ending
    if case.image_files[0].name != f"{name}_0000{ending}":
        return ""
    return (
        f"; give one file holding all {n_declared} channels, or one file per channel "
        f"({name}_0000{ending} to {name}_{n_declared - 1:04d}{ending})"
    )


def _case_files(case: Case) -> tuple[Path, ...]:
    return case.image_files + ((case.label_file,) if case.label_file is not None else ())


def _channel_file(case: Case, channel: int) -> Path:
    return case.image_files[channel] if channel < len(case.image_files) else case.image_files[0]


def _describe(error: Exception, file: Path) -> str:
    """The reader's message without the file name it starts with (the problem names the file)."""
    message = str(error).removeprefix(f"{file}: ").removeprefix("cannot read image: ")
    return message if isinstance(error, (ValueError, OSError)) else f"{type(error).__name__}: {message}"
