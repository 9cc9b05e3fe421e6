"""``mambaseg benchmark``: which network is right for this dataset, answered by a fair comparison with statistics.

Example::

    from mambaseg import workspace as ms

    result = ms.benchmark("Task04_Hippocampus", "my_workspace", "3d_fullres",
                          networks=["unet_resenc", "umamba_bot", "umamba_bot_nomamba"], folds=["0"], iterations=150)
    print(result.results["verdict"], result.files.html)

Every contestant trains under an equal budget: the same folds and splits, the same seed, the configuration's
planned batch (``batch_size=B`` for every run; an override ``batch_size=N`` sets another, for every run), the same
augmentation and either the same number of iterations
(``iterations``: ``epochs`` epochs of ``ceil(iterations / epochs)`` iterations, so the same training samples) or
the same wall-clock minutes per run (``trainer.time_budget_minutes``). Each network trains at the patch its own
plan gives for the configuration, which is the configuration's planned patch unless its topology needs another:
the report notes every such difference. Each run then validates every held-out case of its fold.

The runs are the dataset's ordinary run folders (``runs/CONFIGURATION__NETWORK/fold_K``), trained by the same
``mambaseg train`` a user runs, one subprocess per run, so that ``find-best`` and ``predict`` can use them
afterwards and each run's peak memory is its own process's. A run whose folder already holds a run is reused only
when its resolved config and plan are the benchmark's: finished, it is not trained again; interrupted, it resumes
from its last checkpoint (one per epoch); with another config or plan it is refused, naming the differing keys.
A killed benchmark therefore resumes where it stopped when run again. Costs are measured in this benchmark on this
machine: training samples per second and seconds per epoch (from the run's ``metrics.csv``, first epoch left out
when there are more), the training process's peak resident memory, parameters, and prediction seconds per
validation case (``prediction_times.json``).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import shlex
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from mambaseg.data import Dataset
from mambaseg.data.splits import load_or_create_splits
from mambaseg.evaluation.benchmark_report import CaseScore, RunCosts, build_results, write_report
from mambaseg.evaluation.summary import CasePair
from mambaseg.io.atomic import write_text_atomically
from mambaseg.io.progress import Progress, as_progress
from mambaseg.networks import network_entry
from mambaseg.planning.model import build_network
from mambaseg.planning.plans import ConfigurationPlan
from mambaseg.workspace import nnunet
from mambaseg.workspace.config import compose_train_config, config_differences, saved_config
from mambaseg.workspace.layout import BenchmarkFiles, FoldFiles, Workspace
from mambaseg.workspace.preparation import (
    DatasetArg,
    WorkspaceArg,
    check_workers,
    checked_dataset,
    ensure_plans,
    open_workspace,
    preprocess_planned,
)
from mambaseg.workspace.processes import run_logged
from mambaseg.workspace.runtime import machine_description, resolve_device
from mambaseg.workspace.training import pretrained_file, run_spec, score_held_out

log = logging.getLogger(__name__)

DEFAULT_BASELINE = "unet_resenc"
NNUNET = "nnunet"
"""The contestant name of nnU-Net itself (``with_nnunet``)."""
LOG_TAIL_LINES = 15


class BenchmarkError(ValueError):
    """A benchmark that cannot run as asked, or a run that failed; the message names the setting, run or file."""


@dataclass(frozen=True)
class Budget:
    """What every run of a benchmark gets: a number of training iterations, or wall-clock minutes.

    Args:
        iterations: training iterations per run (None: ``minutes`` bounds the runs).
        minutes: wall-clock minutes of training epochs per run (``trainer.time_budget_minutes``).
        epochs: epochs the iterations are spread over (with ``iterations``).
        val_iterations: pseudo-Dice validation iterations per epoch.
    """

    iterations: int | None
    minutes: float | None
    epochs: int
    val_iterations: int

    def __post_init__(self) -> None:
        if (self.iterations is None) == (self.minutes is None):
            raise BenchmarkError("budget: give either iterations or minutes (budget_minutes), not both or neither")
        if self.iterations is not None and self.iterations < 1:
            raise BenchmarkError(f"iterations must be >= 1, got {self.iterations}")
        if self.minutes is not None and not (math.isfinite(self.minutes) and self.minutes > 0):
            raise BenchmarkError(f"budget_minutes must be a positive number, got {self.minutes}")
        if self.epochs < 1 or self.val_iterations < 0:
            raise BenchmarkError(
                f"epochs must be >= 1 and val_iterations >= 0, got {self.epochs}, {self.val_iterations}"
            )

    @property
    def iterations_per_epoch(self) -> int | None:
        return None if self.iterations is None else math.ceil(self.iterations / self.epochs)

    def overrides(self, batch_size: int) -> list[str]:
        """The config overrides that give a run this budget at ``batch_size``."""
        settings = [f"batch_size={batch_size}", f"trainer.val_iterations={self.val_iterations}"]
        settings.append("trainer.checkpoint_every=1")  # an interrupted benchmark loses at most one epoch of a run
        if self.iterations is not None:
            return [
                *settings,
                f"trainer.num_epochs={self.epochs}",
                f"trainer.iterations_per_epoch={self.iterations_per_epoch}",
            ]
        return [*settings, f"trainer.time_budget_minutes={self.minutes}"]

    def describe(self, batch_size: int) -> dict[str, Any]:
        per_epoch = self.iterations_per_epoch
        return {
            "kind": "iterations" if self.iterations is not None else "minutes",
            "epochs": self.epochs if self.iterations is not None else None,
            "iterations_per_epoch": per_epoch,
            "batch_size": batch_size,
            "samples": None if per_epoch is None else self.epochs * per_epoch * batch_size,
            "minutes": self.minutes,
            "val_iterations": self.val_iterations,
        }


@dataclass(frozen=True)
class BenchmarkResult:
    """A finished benchmark: its files and the content of its ``results.json``."""

    files: BenchmarkFiles
    results: dict[str, Any]


@dataclass(frozen=True)
class _Run:
    """One network's fold in this benchmark: its folder and what it must have been trained with."""

    network: str
    configuration: str
    fold: str
    files: FoldFiles
    config: dict[str, Any]
    plan: dict[str, Any]
    overrides: list[str]


def _program() -> str:
    """The command this process runs as: ``mambaseg`` for the CLI (``python -m mambaseg`` included)."""
    name = Path(sys.argv[0]).name
    return "mambaseg" if name in ("__main__.py", "mambaseg") else name


def _plan_record(plan: ConfigurationPlan) -> dict[str, Any]:
    """The plan as its run's ``plan.json`` holds it (JSON types: lists, not tuples)."""
    return json.loads(json.dumps(dataclasses.asdict(plan)))


def _run_state(run: _Run) -> str:
    """``done``, ``validate`` (trained, not validated), ``resume``, or ``new``; BenchmarkError for another run."""
    files = run.files
    if not files.config.is_file():
        return "new"
    differences = config_differences(saved_config(files.config), run.config)
    if files.plan.is_file() and json.loads(files.plan.read_text()) != run.plan:
        differences.append(f"plan.json: another plan than the benchmark's (patch {run.plan['patch_size']})")
    if differences:
        raise BenchmarkError(
            f"{files.folder} holds a run with other settings than this benchmark's ({'; '.join(differences[:5])}); "
            "move or delete that folder, or run the benchmark in another workspace"
        )
    if files.checkpoints.final.is_file():
        finished = files.validation_summary.is_file() and files.validation_times.is_file()
        return "done" if finished else "validate"
    return "resume" if files.checkpoints.latest.is_file() else "new"


def _log_tail(path: Path) -> str:
    lines = path.read_text(errors="replace").splitlines() if path.is_file() else []
    return "\n".join(lines[-LOG_TAIL_LINES:])


def _train_run(
    run: _Run, state: str, dataset: Dataset, workspace: Workspace, files: BenchmarkFiles, device: str
) -> None:
    """Train (or resume, or only validate) one run as ``mambaseg train`` does, recording its peak memory."""
    command = [sys.executable, "-m", "mambaseg", "train", str(dataset.root), "-c", run.configuration]
    command += ["-n", run.network, "-f", run.fold, "--workspace", str(workspace.root), "--device", device]
    command += {"resume": ["--continue"], "validate": ["--val"], "new": []}[state]
    command += run.overrides
    log_file = files.run_log(run.network, run.fold)
    log.info("%s fold %s: %s (output: %s)", run.network, run.fold, state, log_file)
    code, peak_mb = run_logged(command, log_file)
    if code != 0:
        raise BenchmarkError(
            f"training {run.network} fold {run.fold} failed (exit {code}): {shlex.join(command)}\n"
            f"its output, {log_file}, ends with:\n{_log_tail(log_file)}"
        )
    measurement = files.measurement(run.network, run.fold)
    measurement.parent.mkdir(parents=True, exist_ok=True)
    earlier = json.loads(measurement.read_text()) if measurement.is_file() else {}
    peaks = [p for p in (earlier.get("peak_memory_mb"), peak_mb) if p is not None]
    record = {"peak_memory_mb": max(peaks, default=None), "command": shlex.join(command)}
    write_text_atomically(measurement, json.dumps(record, indent=2))


def _epoch_times(metrics: Path) -> list[float]:
    with metrics.open(newline="", encoding="utf-8") as handle:
        return [float(row["epoch_time"]) for row in csv.DictReader(handle)]


def _parameters(plans: Any, plan: Any) -> int:
    """The trainable parameters of the plan's network (built on the CPU: some networks fill buffers at build)."""
    model = build_network(plans, plan, deep_supervision=False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _scores(contestant: str, fold: str, summary: dict[str, Any]) -> list[CaseScore]:
    names = summary.get("label_names", {})
    rows = []
    for case, entry in summary["cases"].items():
        for label, values in entry["metrics"].items():
            rows.append(
                CaseScore(
                    contestant,
                    fold,
                    case,
                    names.get(label, label),
                    values.get("dice"),
                    values.get("hd95"),
                    values.get("nsd"),
                )
            )
    return rows


def _run_costs(run: _Run, spec: Any, files: BenchmarkFiles) -> RunCosts:
    times = _epoch_times(run.files.logs.metrics)
    steady = times[1:] if len(times) > 1 else times
    per_epoch = statistics.median(steady) if steady else None
    iterations, batch = int(run.config["trainer"]["iterations_per_epoch"]), int(run.config["batch_size"])
    autocast = (saved_config(run.files.config).get("precision") or {}).get("autocast")
    measurement = files.measurement(run.network, run.fold)
    peak = json.loads(measurement.read_text()).get("peak_memory_mb") if measurement.is_file() else None
    predicted = json.loads(run.files.validation_times.read_text())["seconds"]
    return RunCosts(
        contestant=run.network,
        fold=run.fold,
        parameters=_parameters(spec.plans, spec.plan),
        epochs=len(times),
        samples=len(times) * iterations * batch,
        samples_per_second=None if not per_epoch else iterations * batch / per_epoch,
        seconds_per_epoch=per_epoch,
        peak_memory_mb=peak,
        inference_seconds_per_case=statistics.mean(predicted.values()) if predicted else None,
        precision=f"{autocast} autocast" if autocast else "float32",
        patch_size=list(spec.plan.patch_size),
        batch_size=batch,
    )


def _check_contestants(networks: Sequence[str], baseline: str) -> list[str]:
    contestants = list(dict.fromkeys([baseline, *networks]))
    if len(contestants) != len(set(networks) | {baseline}) or len(networks) != len(set(networks)):
        raise BenchmarkError(f"networks: {list(networks)} names a network twice")
    for name in contestants:
        try:
            network_entry(name)
        except ValueError as error:
            raise BenchmarkError(f"networks: {error}") from error
    if len(contestants) < 2:
        raise BenchmarkError(f"networks: name at least one network besides the baseline {baseline!r}")
    return contestants


def benchmark(
    dataset: DatasetArg,
    workspace: WorkspaceArg = None,
    configuration: str = "3d_fullres",
    networks: Sequence[str] = (),
    folds: Sequence[str | int] = ("0",),
    iterations: int | None = None,
    budget_minutes: float | None = None,
    epochs: int = 10,
    val_iterations: int = 5,
    baseline: str = DEFAULT_BASELINE,
    name: str | None = None,
    overrides: Sequence[str] = (),
    with_nnunet: str | os.PathLike | None = None,
    device: str = "auto",
    workers: int | None = None,
    progress: Progress | None = None,
) -> BenchmarkResult:
    """Train every network (and the baseline) on the same folds under an equal budget, then compare them.

    Args:
        dataset: folder, name under ``WORKSPACE/raw``, or ``Dataset``.
        workspace: the workspace.
        configuration: ``2d``, ``3d_fullres`` or ``3d_lowres``.
        networks: registered networks to compare; the baseline is added first where missing.
        folds: cross-validation folds each network trains and validates.
        iterations: training iterations per run (one of ``iterations`` and ``budget_minutes``).
        budget_minutes: wall-clock minutes of training per run.
        epochs: epochs the iterations are spread over.
        val_iterations: pseudo-Dice validation iterations per epoch.
        baseline: the network every other one is tested against.
        name: the benchmark's folder under ``benchmarks/`` (default: the configuration).
        overrides: ``key=value`` overrides of ``configs/train.yaml`` for every run (``batch_size=N``: every run's
            batch instead of the configuration's planned one).
        with_nnunet: the python of an nnU-Net 2.x installation, to enter nnU-Net itself (``nnunet``).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        workers: processes for the check and preprocessing.
        progress: where to report which run of how many is training.
    """
    ws = open_workspace(workspace)
    check_workers(workers)
    budget = Budget(iterations, budget_minutes, int(epochs), int(val_iterations))
    contestants = _check_contestants(networks, baseline)
    fold_names = [str(fold) for fold in dict.fromkeys(folds)]
    if any(fold == "all" for fold in fold_names):
        raise BenchmarkError("folds: 'all' validates no held-out case; give cross-validation folds")
    if with_nnunet is not None:
        if budget.iterations is None:
            raise BenchmarkError("with_nnunet: nnU-Net's trainer has no time budget; give the benchmark iterations")
        version = nnunet.check_nnunet(with_nnunet)  # before anything trains
        log.info("nnU-Net %s from %s enters the benchmark as %r", version, with_nnunet, NNUNET)
    loaded = checked_dataset(dataset, ws, workers)
    plans = ensure_plans(loaded, ws, workers)
    if configuration not in plans.configurations:
        raise BenchmarkError(
            f"configuration {configuration!r} is not planned; planned: {', '.join(plans.configurations)}"
        )
    preprocess_planned(loaded, ws, plans, [configuration], workers)
    planned = plans.configurations[configuration]
    batch = int(compose_train_config(list(overrides))["batch_size"] or planned.batch_size)  # batch_size=N: for all
    files = ws.dataset(loaded.name).benchmark(name or configuration)
    files.folder.mkdir(parents=True, exist_ok=True)

    notes, specs, runs = [], {}, []
    config_overrides = [*overrides, *budget.overrides(batch)]
    config = compose_train_config(config_overrides)
    config["network"]["pretrained"] = pretrained_file(config["network"].get("pretrained"))
    for fold in fold_names:
        for network in contestants:
            spec = run_spec(loaded, ws, configuration, network, fold, workers)
            specs[network, fold] = spec
            runs.append(
                _Run(network, configuration, fold, spec.files, config, _plan_record(spec.plan), config_overrides)
            )
            if fold == fold_names[0] and list(spec.plan.patch_size) != list(planned.patch_size):
                notes.append(
                    f"{network} trains at patch {list(spec.plan.patch_size)}, not the plan's "
                    f"{list(planned.patch_size)}: its topology needs it"
                )
    states = {(run.network, run.fold): _run_state(run) for run in runs}  # refuses foreign runs before any training
    total = len(runs) + (len(fold_names) if with_nnunet is not None else 0)
    with as_progress(progress).task(f"benchmark {files.folder.name}: runs", total=total) as task:
        for index, run in enumerate(runs, 1):
            state = states[run.network, run.fold]
            log.info("run %d of %d: %s fold %s (%s)", index, total, run.network, run.fold, state)
            if state != "done":
                _train_run(run, state, loaded, ws, files, device)
            task.advance()
        nnunet_folds = []
        if with_nnunet is not None:
            settings = _nnunet_settings(configuration, budget, batch, config, resolve_device(device))
            splits = load_or_create_splits(ws.dataset(loaded.name).splits, [case.name for case in loaded.cases])
            for index, fold in enumerate(fold_names, len(runs) + 1):
                log.info("run %d of %d: nnU-Net fold %s", index, total, fold)
                result = nnunet.train_nnunet_fold(with_nnunet, loaded, files.nnunet, splits, fold, settings)
                nnunet_folds.append((result, splits[int(fold)]["val"]))
                task.advance()

    scores, costs = [], []
    for run in runs:
        summary = json.loads(run.files.validation_summary.read_text())
        scores += _scores(run.network, run.fold, summary)
        costs.append(_run_costs(run, specs[run.network, run.fold], files))
    for result, val_cases in nnunet_folds:
        scores += _nnunet_scores(result, val_cases, loaded, plans)
        costs.append(_nnunet_costs(result))
    if with_nnunet is not None:
        contestants.append(NNUNET)
        notes.append(
            f"{NNUNET}: nnU-Net {version} with its own plans and trainer, the same folds, epochs, iterations and batch"
        )
    info = {
        "name": files.folder.name,
        "dataset": loaded.name,
        "configuration": configuration,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "budget": budget.describe(batch),
        "folds": fold_names,
        "machine": {
            **machine_description(resolve_device(device)),
            "precision": ", ".join(sorted({c.precision for c in costs})),
        },
        "command": shlex.join([_program(), *sys.argv[1:]]),
        "notes": notes,
    }
    results = build_results(info, contestants, baseline, scores, costs)
    write_report(results, files)
    log.info("benchmark %s: %s", files.folder, results["verdict"])
    return BenchmarkResult(files, results)


def _nnunet_settings(
    configuration: str, budget: Budget, batch: int, config: dict[str, Any], device: torch.device
) -> nnunet.NnUNetSettings:
    return nnunet.NnUNetSettings(
        configuration=configuration,
        epochs=budget.epochs,
        iterations_per_epoch=int(budget.iterations_per_epoch),
        val_iterations=budget.val_iterations,
        batch_size=batch,
        threads=torch.get_num_threads(),
        workers=int(config["num_workers"]) if device.type == "cuda" or (os.cpu_count() or 1) >= 4 else 0,  # as ours
        device=device.type,
    )


def _nnunet_scores(
    result: nnunet.NnUNetFold, val_names: Sequence[str], dataset: Dataset, plans: Any
) -> list[CaseScore]:
    """nnU-Net's held-out masks scored by the same function as our validation (regions included)."""
    val_cases = [case for case in dataset.cases if case.name in set(val_names)]
    pairs = [
        CasePair(case.name, result.predictions / f"{case.name}{dataset.file_ending}", case.label_file)
        for case in val_cases
    ]
    summary = score_held_out(pairs, dataset, plans, result.predictions)
    return _scores(NNUNET, result.fold, summary)


def _nnunet_costs(result: nnunet.NnUNetFold) -> RunCosts:
    return RunCosts(
        contestant=NNUNET,
        fold=result.fold,
        parameters=result.parameters,
        epochs=result.epochs,
        samples=result.samples,
        samples_per_second=result.samples_per_second,
        seconds_per_epoch=result.seconds_per_epoch,
        peak_memory_mb=result.peak_memory_mb,
        inference_seconds_per_case=result.inference_seconds_per_case,
        precision=result.precision,
        patch_size=list(result.patch_size),
        batch_size=result.batch_size,
    )
