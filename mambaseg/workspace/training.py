"""Training a fold and validating it: the plan and cases from the workspace, the run's files into it.

Example::

    from mambaseg import workspace as ms

    result = ms.train("Task04_Hippocampus", "my_workspace", "3d_fullres", fold="0",
                      overrides=["trainer=cpu_short", "trainer.num_epochs=2"])
    print(result.validation["foreground_mean"]["dice"], result.fold.folder)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mambaseg.data import Dataset
from mambaseg.data.splits import load_or_create_splits
from mambaseg.evaluation.dice import item_key
from mambaseg.evaluation.model_selection import foreground_labels, regions_class_order
from mambaseg.evaluation.summary import CasePair, evaluate_cases, write_summary
from mambaseg.inference.ensemble import write_probabilities
from mambaseg.inference.pipeline import ModelStage, Pipeline, WindowSettings
from mambaseg.inference.runs import stage_plan
from mambaseg.io import Image, write_image
from mambaseg.io.atomic import write_text_atomically
from mambaseg.io.locks import owned
from mambaseg.io.progress import Progress
from mambaseg.planning.checkpoint import load_checkpoint
from mambaseg.planning.model import build_network
from mambaseg.training.run import train_fold
from mambaseg.training.setup import RunSpec, choose_plan
from mambaseg.training.step import autocast_dtype
from mambaseg.workspace.cascade import previous_stage_masks, validation_previous_masks
from mambaseg.workspace.config import check_resumable, compose_train_config, saved_config
from mambaseg.workspace.layout import (
    FOLD_ALL,
    FOLD_PREFIX,
    CheckpointFiles,
    FoldFiles,
    LayoutError,
    RunFiles,
    Workspace,
    folder_lock,
)
from mambaseg.workspace.preparation import (
    DatasetArg,
    WorkspaceArg,
    check_workers,
    checked_dataset,
    ensure_plans,
    open_dataset,
    open_workspace,
    preprocess_planned,
    replan_for,
)
from mambaseg.workspace.reports import fold_report, without_failing
from mambaseg.workspace.runtime import barrier, distributed, machine_description, make_deterministic

log = logging.getLogger(__name__)

DEFAULT_FOLDS = 5  # as make_splits writes them


@dataclass(frozen=True)
class TrainResult:
    """A trained (or validated again) fold: its files and its validation summary (None on ranks other than 0)."""

    fold: FoldFiles
    validation: dict[str, Any] | None


def fold_cases(workspace: Workspace, dataset: Dataset, fold: str) -> tuple[list[str], list[str]]:
    """(training, validation) case names of a fold from ``splits.json`` (written on first use); ``all``: every case."""
    names = [case.name for case in dataset.cases]
    if fold == FOLD_ALL:
        return names, names
    path = workspace.dataset(dataset.name).splits
    splits = load_or_create_splits(path, names)
    if not fold.isdigit() or int(fold) >= len(splits):
        raise ValueError(f"fold {fold!r} does not exist: {path} has folds 0-{len(splits) - 1}, or use 'all'")
    split = splits[int(fold)]
    return list(split["train"]), list(split["val"])


def pretrained_file(value: str | None) -> str | None:
    """``network.pretrained`` as a file: a fold or run folder becomes the path of its final checkpoint.

    A fold folder gives its ``checkpoint_final.pt``; a run folder that of its first fold with one (numbered folds in
    order, then ``all``), said in the log; a file (or None) passes as it is.

    Raises:
        ValueError: a folder that is not a fold or run folder, or has no finished fold, naming it.
    """
    if not value or not Path(value).expanduser().is_dir():
        return value
    path = Path(value).expanduser().resolve()
    try:
        folds = [FoldFiles.parse(path)] if path.name.startswith(FOLD_PREFIX) else RunFiles.parse(path).folds()
    except LayoutError as err:
        raise ValueError(f"network.pretrained: {err}; give a checkpoint file, a fold folder or a run folder") from err
    finished = [fold for fold in folds if fold.checkpoints.final.is_file()]
    if not finished:
        raise ValueError(
            f"network.pretrained: {path} has no finished fold (no {CheckpointFiles.in_folder(path).final.name}); "
            "train it to the end, or give one of its checkpoint files"
        )
    chosen = finished[0]
    if len(folds) > 1:
        log.info(
            "network.pretrained: %s has folds %s; starting from fold %s (give a fold folder to choose another)",
            path,
            ", ".join(fold.fold for fold in folds),
            chosen.fold,
        )
    return str(chosen.checkpoints.final)


def _check_fold(dataset: Dataset, workspace: Workspace, fold: str) -> None:
    """ValueError for a fold that cannot exist, from ``dataset.json`` and ``splits.json`` alone."""
    if fold == FOLD_ALL:
        return
    if not fold.isdigit():
        raise ValueError(f"fold {fold!r}: a fold is a number of the cross-validation splits, or {FOLD_ALL!r}")
    cases = len(dataset.cases)
    if not workspace.dataset(dataset.name).splits.is_file() and cases < DEFAULT_FOLDS:
        raise ValueError(
            f"fold {fold}: {dataset.name} has {cases} training case(s), and {DEFAULT_FOLDS}-fold cross-validation "
            f"needs at least {DEFAULT_FOLDS}; train on every case with fold {FOLD_ALL!r}"
        )
    fold_cases(workspace, dataset, fold)  # a fold beyond the splits is refused here


def run_spec(
    dataset: Dataset, workspace: Workspace, configuration: str, network: str | None, fold: str, workers: int | None
) -> RunSpec:
    """What to train: the plan (replanned for another network than planned), the fold's cases and files."""
    plans = ensure_plans(dataset, workspace, workers)
    plan = choose_plan(plans, configuration, network, lambda name: replan_for(dataset, workspace, plans, name))
    train_cases, val_cases = fold_cases(workspace, dataset, fold)
    files = workspace.dataset(dataset.name)
    previous = None
    if plan.previous_stage is not None:  # a cascade stage: the previous stage's masks of its cases
        previous = previous_stage_masks(dataset, files, configuration, plan, sorted({*train_cases, *val_cases}))
    return RunSpec(
        dataset=dataset,
        plans=plans,
        configuration=configuration,
        plan=plan,
        fold=fold,
        train_cases=train_cases,
        val_cases=val_cases,
        preprocessed=files.preprocessed(configuration),
        files=files.run(configuration, plan.network).fold(fold),
        previous_stage=previous,
    )


def _write_validation_case(
    mask: Image,
    mask_file: Path,
    probabilities: np.ndarray | None,
    probabilities_file: Path,
    regions_class_order: list[int] | None,
) -> None:
    if probabilities is not None:
        write_probabilities(probabilities_file, probabilities, regions_class_order)
    else:
        probabilities_file.unlink(missing_ok=True)  # of an earlier validation: not of this mask
    write_image(mask, mask_file)  # last: a mask means the case is complete


def validate_fold(
    spec: RunSpec,
    model: torch.nn.Module,
    device: torch.device,
    step: float,
    save_probabilities: bool = True,
    precision: torch.dtype | None = None,
) -> dict[str, Any]:
    """Predict the fold's validation cases in their original geometry and score them as ``evaluate`` does.

    ``precision``: the autocast dtype the network runs in (None: float32), as ``predict``'s; the run's own, so that
    validation predicts as ``predict`` does by default where the device computes a reduced precision natively.

    Writes the masks, with ``save_probabilities`` each case's softmax probabilities (``CASE.npz``, float16, as
    ``predict --save-probabilities``; what find-best ensembles), ``summary.json`` (evaluate's schema: Dice, HD95
    and surface Dice per case and label), ``metrics.csv`` and ``prediction_times.json`` (the seconds each case's
    prediction took, reading and preprocessing included, writing not) into the fold's ``validation/`` folder;
    returns the summary. Files are written in a background thread while the next case is predicted. Then the fold's
    ``report.html`` (``mambaseg.workspace.reports``; one that cannot be drawn is a warning, never a failure).
    """
    plan, plans, dataset = spec.plan, spec.plans, spec.dataset
    regions = regions_class_order(dataset)
    files: FoldFiles = spec.files  # the workspace's files: run_spec made them
    model.eval()
    model.deep_supervision = False
    planned = stage_plan(plans, spec.configuration, str(files.plan), plan)
    stage = ModelStage(
        [model],
        dataclasses.replace(planned, batch_size=1, regions_class_order=regions),
        WindowSettings(device, step=step, autocast_dtype=precision),
        previous=validation_previous_masks(spec),  # a cascade stage also takes the previous stage's masks
    )
    predictor = Pipeline(stage)
    cases = {case.name: case for case in dataset.cases}
    pairs = []
    seconds: dict[str, float] = {}
    files.validation.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(1, thread_name_prefix="write") as writer:
        writing: Future | None = None
        for name in spec.val_cases:
            case = cases[name]
            mask_file = files.validation_mask(name, dataset.file_ending)
            started = time.perf_counter()
            prediction = predictor.predict(case.load_images(), keep_probabilities=save_probabilities)
            seconds[name] = time.perf_counter() - started
            if writing is not None:
                writing.result()
            writing = writer.submit(
                _write_validation_case,
                prediction.mask,
                mask_file,
                prediction.probabilities,
                files.validation_probabilities(name),
                regions,
            )
            del prediction
            pairs.append(CasePair(name, mask_file, case.label_file))
        if writing is not None:
            writing.result()
    dtype = str(precision or torch.float32).removeprefix("torch.")
    times = {"device": str(device), "precision": dtype, "machine": machine_description(device), "seconds": seconds}
    write_text_atomically(files.validation_times, json.dumps(times, indent=2))
    summary = score_held_out(pairs, dataset, plans, files.validation)
    scores = files.validation_scores
    write_summary(summary, scores.summary, scores.table)
    log.info("validation of %s: mean Dice %s", files.folder, dice_line(summary))
    without_failing(f"fold {files.folder}", lambda: fold_report(files, dataset, device))
    return summary


def score_held_out(pairs: list[CasePair], dataset: Dataset, plans: Any, prediction: Path) -> dict[str, Any]:
    """Score predicted masks of held-out cases as a fold's validation does (``evaluate``'s summary schema).

    Region-based datasets are scored per region, as find-best does; others per foreground label (the ignore label
    left out), with the dataset's label names. ``prediction`` is the folder the masks are in, as the summary records.
    """
    if dataset.has_regions:
        regions = foreground_labels(dataset)
        names = {item_key(value): name for name, value in dataset.labels.items() if item_key(value) in regions}
        names |= {(value,): name for name, value in dataset.labels.items() if isinstance(value, int)}
        scored = regions
    else:
        names = {value: name for name, value in plans.labels.items() if isinstance(value, int)}
        scored = [value for value in names if value > 0 and value != dataset.ignore_label]
    return evaluate_cases(
        pairs,
        scored,
        label_names=names,
        ignore_label=dataset.ignore_label,
        prediction=prediction,
        reference=dataset.root,
    )


def dice_line(summary: dict[str, Any]) -> str:
    def cell(value: float | None) -> str:
        return "-" if value is None or math.isnan(value) else f"{value:.4f}"

    per_label = ", ".join(f"{summary['label_names'].get(k, k)} {cell(v['dice'])}" for k, v in summary["mean"].items())
    return f"{cell(summary['foreground_mean']['dice'])} ({per_label})"


def validation_settings(config: dict, device: torch.device) -> tuple[float, bool, torch.dtype | None]:
    """(sliding-window step, save probabilities) of the config's ``validation`` section, and the autocast dtype of
    ``trainer.amp`` on ``device`` (None: float32)."""
    validation = config["validation"]
    precision = autocast_dtype(device, bool(config["trainer"]["amp"]))
    return float(validation["step"]), bool(validation.get("save_probabilities", True)), precision


def _validate_checkpoint(spec: RunSpec, config: dict, device: torch.device, checkpoint: str) -> dict[str, Any]:
    files: FoldFiles = spec.files
    path = files.checkpoints.get(checkpoint)
    if not path.is_file():
        raise ValueError(f"validation_checkpoint: {path} does not exist; train the fold first (or choose another)")
    model = build_network(spec.plans, spec.plan, deep_supervision=False).to(device)
    model.load_state_dict(load_checkpoint(path, map_location=device).model)
    return validate_fold(spec, model, device, *validation_settings(config, device))


def train(
    dataset: DatasetArg,
    workspace: WorkspaceArg = None,
    configuration: str = "3d_fullres",
    network: str | None = None,
    fold: str | int = "0",
    overrides: Sequence[str] = (),
    device: str = "auto",
    continue_training: bool = False,
    deterministic: bool = False,
    workers: int | None = None,
    validate_only: bool = False,
    validation_checkpoint: str = "final",
    progress: Progress | None = None,
) -> TrainResult:
    """Train one fold of one configuration and network, then validate it; what is missing before is done first.

    Checks the dataset, plans and preprocesses what is missing (rank 0 under torchrun), trains, and validates
    the fold's held-out cases in their original geometry. Under torchrun the run is data-parallel (DDP).

    Args:
        dataset: folder, name under ``WORKSPACE/raw``, or ``Dataset``.
        workspace: the workspace.
        configuration: ``2d``, ``3d_fullres`` or ``3d_lowres``.
        network: a registered network (None: the one planned for the configuration).
        fold: ``0``-``4`` of ``splits.json``, or ``all``.
        overrides: ``key=value`` overrides of ``configs/train.yaml``.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        continue_training: resume the latest checkpoint.
        deterministic: deterministic algorithms (slower), the same weights for the same seed.
        workers: processes for the check and preprocessing.
        validate_only: only validate the fold again from ``validation_checkpoint``.
        validation_checkpoint: ``final``, ``best`` or ``latest`` (with ``validate_only``).
        progress: where to report the check's and preprocessing's progress (default: nowhere).
    """
    ws = open_workspace(workspace)
    fold = str(fold)
    check_workers(workers)
    config = compose_train_config(list(overrides))
    config["network"]["pretrained"] = pretrained_file(config["network"].get("pretrained"))
    with distributed(device) as (torch_device, is_main):
        if deterministic:
            make_deterministic()
        _check_fold(open_dataset(dataset, ws), ws, fold)  # before the check and preprocessing of every case
        loaded = checked_dataset(dataset, ws, workers, progress if is_main else None)
        if is_main:
            plans = ensure_plans(loaded, ws, workers, progress)
            preprocess_planned(loaded, ws, plans, [configuration], workers, progress=progress, wait_for_others=True)
        barrier()
        spec = run_spec(loaded, ws, configuration, network, fold, workers)
        if validate_only:
            if not is_main:
                return TrainResult(spec.files, None)
            with owned(folder_lock(spec.files.folder), f"fold {spec.files.folder}"):
                summary = _validate_checkpoint(spec, config, torch_device, validation_checkpoint)
            return TrainResult(spec.files, summary)
        fold_lock = owned(folder_lock(spec.files.folder), f"fold {spec.files.folder}") if is_main else nullcontext()
        with fold_lock:  # one command trains (or validates) a fold at a time; other ranks follow rank 0
            if continue_training and spec.files.config.is_file():
                check_resumable(saved_config(spec.files.config), config, spec.files.config)
            model = train_fold(spec, config, torch_device, continue_training)
            settings = validation_settings(config, torch_device)
            summary = validate_fold(spec, model, torch_device, *settings) if is_main else None
    return TrainResult(spec.files, summary)
