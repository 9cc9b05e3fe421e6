"""The stages before training: check the dataset, fingerprint it, plan, preprocess.

Each stage takes the dataset (its folder, its name under ``WORKSPACE/raw``, or a loaded ``Dataset``) and
the workspace (a path, a ``Workspace``, or None for ``$MAMBASEG_WORKSPACE`` / ``./mambaseg_workspace``),
writes its file into the workspace and returns what it made.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from mambaseg.data import CheckReport, Dataset, DatasetError, check_dataset, load_dataset
from mambaseg.io.locks import owned
from mambaseg.io.progress import Progress
from mambaseg.planning.fingerprint import Fingerprint, extract_fingerprint
from mambaseg.planning.planner import plan_experiment
from mambaseg.planning.plans import Plans, load_plans
from mambaseg.planning.transfer import transfer_plans
from mambaseg.preprocessing import preprocess_dataset
from mambaseg.preprocessing.dataset import PreprocessSummary
from mambaseg.workspace.layout import DatasetFiles, Workspace, folder_lock, resolve_workspace

log = logging.getLogger(__name__)

DatasetArg = str | os.PathLike | Dataset
WorkspaceArg = str | os.PathLike | Workspace | None


class DatasetCheckError(ValueError):
    """The dataset check found errors; ``report`` lists every problem of ``dataset``."""

    def __init__(self, dataset: Dataset, report: CheckReport) -> None:
        super().__init__(f"{report.root}: the dataset check found {len(report.errors)} error(s)")
        self.dataset = dataset
        self.report = report


MAX_WORKERS_PER_CPU = 4


def check_workers(workers: int | None) -> None:
    """ValueError unless ``workers`` is None (one per CPU) or between 0 and a few per CPU."""
    limit = MAX_WORKERS_PER_CPU * (os.cpu_count() or 1)
    if workers is not None and not 0 <= workers <= limit:
        raise ValueError(f"workers {workers}: must be between 0 and {limit} ({MAX_WORKERS_PER_CPU} per CPU)")


def open_workspace(workspace: WorkspaceArg) -> Workspace:
    """A ``Workspace`` from a path (or the default when None)."""
    return workspace if isinstance(workspace, Workspace) else resolve_workspace(workspace)


def open_dataset(dataset: DatasetArg, workspace: WorkspaceArg = None) -> Dataset:
    """The dataset of a folder, or of a name under ``WORKSPACE/raw``; a loaded one as it is.

    Raises:
        DatasetError: no dataset there, naming the folder or its ``dataset.json``.
    """
    if isinstance(dataset, Dataset):
        return dataset
    return load_dataset(open_workspace(workspace).dataset_source(dataset))


def dataset_files(dataset: str | os.PathLike, workspace: Workspace) -> DatasetFiles:
    """The workspace folder of a dataset given as any command takes it: its name in the workspace, its raw folder,
    or its name or id under ``WORKSPACE/raw`` (read for its name). A dataset found nowhere gives the folder its
    name would have, for the caller's message."""
    plain = Path(dataset).name == str(dataset)  # a name, not a path (a path would join as itself)
    named = workspace.dataset(Path(dataset).name)
    if plain and named.folder.is_dir():
        return named
    try:
        return workspace.dataset(open_dataset(dataset, workspace).name)
    except (DatasetError, OSError):
        return named


def check(
    dataset: DatasetArg, workspace: WorkspaceArg = None, workers: int | None = None, progress: Progress | None = None
) -> CheckReport:
    """Every problem of the dataset: files, geometry, labels (the report; nothing is written).

    Args:
        dataset: folder, name under ``WORKSPACE/raw``, or ``Dataset``.
        workspace: the workspace (for dataset names).
        workers: processes reading cases (None: one per CPU; 0 or 1: this process).
        progress: where to report progress (default: nowhere).
    """
    check_workers(workers)
    return check_dataset(open_dataset(dataset, workspace), max_workers=workers, progress=progress)


def checked_dataset(
    dataset: DatasetArg, workspace: WorkspaceArg = None, workers: int | None = None, progress: Progress | None = None
) -> Dataset:
    """The dataset once its check found no error.

    Raises:
        DatasetCheckError: with the check's report.
    """
    check_workers(workers)
    loaded = open_dataset(dataset, workspace)
    report = check_dataset(loaded, max_workers=workers, progress=progress)
    if not report.ok:
        raise DatasetCheckError(loaded, report)
    return loaded


def fingerprint(
    dataset: DatasetArg, workspace: WorkspaceArg = None, workers: int | None = None, progress: Progress | None = None
) -> Fingerprint:
    """Check the dataset, extract its fingerprint and write ``fingerprint.json``."""
    ws = open_workspace(workspace)
    loaded = checked_dataset(dataset, ws, workers, progress)
    return _extract_fingerprint(loaded, ws, workers, progress)


def _extract_fingerprint(
    dataset: Dataset, workspace: Workspace, workers: int | None, progress: Progress | None = None
) -> Fingerprint:
    extracted = extract_fingerprint(dataset, workers, progress=progress)
    path = workspace.dataset(dataset.name).fingerprint
    extracted.save(path)
    log.info("fingerprint of %d cases: %s", len(extracted.cases), path)
    return extracted


def _fingerprint_of(
    dataset: Dataset, workspace: Workspace, workers: int | None, progress: Progress | None = None
) -> Fingerprint:
    path = workspace.dataset(dataset.name).fingerprint
    return Fingerprint.load(path) if path.is_file() else _extract_fingerprint(dataset, workspace, workers, progress)


def plan(
    dataset: DatasetArg,
    workspace: WorkspaceArg = None,
    gpu_memory_gb: float = 8.0,
    network: str | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
    plans_from: str | os.PathLike | None = None,
) -> Plans:
    """Check the dataset, fingerprint it where not done yet, plan and write ``plans.json``.

    Args:
        dataset: folder, name under ``WORKSPACE/raw``, or ``Dataset``.
        workspace: the workspace.
        gpu_memory_gb: the training memory budget (not used with ``plans_from``: the source's is kept).
        network: a registered network for every configuration (None: the planner's default).
        workers: processes reading cases.
        progress: where to report progress (default: nowhere).
        plans_from: a dataset name in the workspace, or a ``plans.json``, whose configurations (network, topology,
            patch, batch, spacing) to keep, with this dataset's normalisation and labels
            (``planning.transfer``), so that a network trained there can be fine-tuned here.

    Raises:
        ValueError: ``plans_from`` has no plans, or another channel count or dimensionality; ``network`` given
            with ``plans_from``.
    """
    ws = open_workspace(workspace)
    if plans_from is not None and network is not None:
        raise ValueError(f"network {network!r}: the networks come from plans_from ({plans_from}); give one of the two")
    source = _plans_source(ws, plans_from) if plans_from is not None else None
    loaded = checked_dataset(dataset, ws, workers, progress)
    target = ws.dataset(loaded.name).plans
    found = _fingerprint_of(loaded, ws, workers, progress)
    if source is None:
        plans = plan_experiment(found, gpu_memory_gb, network)
    else:
        if source.resolve() == target.resolve():
            raise ValueError(f"plans_from {plans_from}: {source} is the plans of {loaded.name} itself")
        source_plans = load_plans(source)
        record = {
            "dataset": source_plans.dataset_name,
            "file": str(source.resolve()),
            "sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        }
        plans = transfer_plans(source_plans, found, record)
        log.info("plans of %s from those of %s (%s)", loaded.name, record["dataset"], source)
    plans.save(target)
    return plans


def _plans_source(workspace: Workspace, plans_from: str | os.PathLike) -> Path:
    """The ``plans.json`` that ``plans_from`` names (a file, or a dataset of the workspace that has plans)."""
    path = workspace.plans_source(plans_from)
    if not path.is_file():
        raise ValueError(
            f"plans_from {plans_from}: neither a plans file nor a dataset of {workspace.root} with plans "
            f"(no {path}); plan that dataset first"
        )
    return path


def replan_for(dataset: Dataset, workspace: Workspace, plans: Plans, network: str) -> Plans:
    """The dataset planned for ``network`` with the fingerprint and budget of ``plans`` (nothing written)."""
    fingerprint_file = workspace.dataset(dataset.name).fingerprint
    return plan_experiment(Fingerprint.load(fingerprint_file), plans.gpu_memory_gb, network=network)


def ensure_plans(
    dataset: Dataset, workspace: Workspace, workers: int | None = None, progress: Progress | None = None
) -> Plans:
    """The dataset's plans: read from ``plans.json``, or fingerprinted (where needed) and planned with defaults."""
    path = workspace.dataset(dataset.name).plans
    if path.is_file():
        return load_plans(path)
    plans = plan_experiment(_fingerprint_of(dataset, workspace, workers, progress))
    plans.save(path)
    log.info("plans with default settings (plan the dataset to choose others): %s", path)
    return plans


def preprocess(
    dataset: DatasetArg,
    workspace: WorkspaceArg = None,
    configurations: Sequence[str] | None = None,
    workers: int | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> dict[str, PreprocessSummary]:
    """Check the dataset, plan it where not done yet, and preprocess each configuration.

    Args:
        dataset: folder, name under ``WORKSPACE/raw``, or ``Dataset``.
        workspace: the workspace.
        configurations: configurations of the plans (None: every planned one).
        workers: processes.
        force: preprocess cases again even where their files exist.
        progress: where to report progress (default: nowhere).

    Returns:
        Configuration -> what was preprocessed and what was already done.
    """
    ws = open_workspace(workspace)
    loaded = checked_dataset(dataset, ws, workers, progress)
    plans = ensure_plans(loaded, ws, workers, progress)
    return preprocess_planned(loaded, ws, plans, configurations or list(plans.configurations), workers, force, progress)


def preprocess_planned(
    dataset: Dataset,
    workspace: Workspace,
    plans: Plans,
    configurations: Sequence[str],
    workers: int | None = None,
    force: bool = False,
    progress: Progress | None = None,
    wait_for_others: bool = False,
) -> dict[str, PreprocessSummary]:
    """Preprocess the configurations of ``plans`` (cases already done are skipped unless ``force``).

    Each configuration's folder is owned by one command at a time: another one preprocessing it is refused, or with
    ``wait_for_others`` (training, whose folds often start side by side) waited for.
    """
    summaries = {}
    for configuration in configurations:
        out = workspace.dataset(dataset.name).preprocessed(configuration)
        with owned(folder_lock(out), f"preprocessed folder {out}", wait=wait_for_others):
            summaries[configuration] = preprocess_dataset(dataset, plans, configuration, out, workers, force, progress)
        log.info("%s: preprocessed into %s", configuration, out)
    return summaries
