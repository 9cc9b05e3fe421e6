"""A trained run's folds turned into a ``Predictor``.

Each fold has the configuration plan it trained with (its ``plan.json``) and a checkpoint. The plans (channels,
labels, transpose, normalisation) come from the checkpoint; the configuration entry is replaced by the folds'
plan, which is what was trained when the network differs from the planned one. The workspace layer
(``mambaseg.workspace``) finds the files.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mambaseg.inference.predictor import Predictor
from mambaseg.planning.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from mambaseg.planning.model import build_network, mirror_axes_for
from mambaseg.planning.plans import ConfigurationPlan, Normalization, Plans, PlansError, plans_from_dict
from mambaseg.preprocessing.case import PreprocessingSpec

logger = logging.getLogger(__name__)


class RunError(ValueError):
    """A run folder that cannot be used for prediction; the message names the folder and the problem."""


@dataclass(frozen=True)
class TrainedRun:
    """The folds of one run chosen for prediction, with the plans they share."""

    run_dir: Path
    configuration: str
    plans: Plans  # its ``configurations[configuration]`` is the plan the folds trained with
    checkpoints: tuple[Path, ...]  # one per fold

    @property
    def plan(self) -> ConfigurationPlan:
        return self.plans.configurations[self.configuration]

    @property
    def label_names(self) -> dict[int, str]:
        """Class index -> label name (background included)."""
        return {value: name for name, value in self.plans.labels.items() if isinstance(value, int)}


def plan_from_dict(data: dict) -> ConfigurationPlan:
    """A configuration plan from its JSON form (a fold's ``plan.json``, or a checkpoint's record of it)."""
    normalization = [Normalization(n["scheme"], dict(n.get("params", {}))) for n in data["normalization"]]
    return ConfigurationPlan(**{**data, "normalization": normalization})


def _read_plan(path: Path) -> ConfigurationPlan:
    try:
        return plan_from_dict(json.loads(path.read_text()))
    except OSError as err:
        raise RunError(f"{path}: cannot read the fold's plan: {err.strerror}") from err
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise RunError(f"{path}: not a valid configuration plan: {err}") from err


def load_trained_run(run_dir: Path, configuration: str, folds: Sequence[tuple[Path, Path]]) -> TrainedRun:
    """The trained run of ``folds``: the plans from the first checkpoint, with the folds' shared plan.

    Args:
        run_dir: the run folder, for messages and records.
        configuration: the configuration the folds trained.
        folds: ``(plan file, checkpoint)`` of each fold to predict with.

    Raises:
        RunError: a plan or checkpoint is unreadable, or the folds' plans differ.
    """
    if not folds:
        raise RunError(f"{run_dir}: no fold to predict with")
    plans_by_fold = [_read_plan(plan_file) for plan_file, _ in folds]
    first_plan = folds[0][0]
    for (plan_file, _), plan in zip(folds[1:], plans_by_fold[1:], strict=True):
        if plan != plans_by_fold[0]:
            raise RunError(f"{plan_file}: differs from {first_plan}; folds of one run share one plan")
    first = folds[0][1]
    try:
        saved = load_checkpoint(first).plans
        if saved is None:
            raise RunError(f"{first}: the checkpoint holds no plans")
        plans = plans_from_dict(saved, source=str(first))
    except (CheckpointError, PlansError) as err:
        raise RunError(str(err)) from err
    plans = dataclasses.replace(plans, configurations={**plans.configurations, configuration: plans_by_fold[0]})
    return TrainedRun(run_dir, configuration, plans, tuple(checkpoint for _, checkpoint in folds))


def check_identity(run: TrainedRun, checkpoint: Checkpoint) -> None:
    """RunError unless ``checkpoint`` was trained on the run's dataset, configuration, plan and network.

    The dataset-level plans (dataset, channels, labels, axes, normalisation) must equal the run's; a checkpoint
    that records its run (configuration and the plan it trained) must record this run's.
    """
    if checkpoint.plans is None:
        raise RunError(f"{checkpoint.path}: the checkpoint holds no plans, so it cannot be matched to {run.run_dir}")
    try:
        saved = plans_from_dict(checkpoint.plans, source=str(checkpoint.path))
    except PlansError as err:
        raise RunError(str(err)) from err
    if dataclasses.replace(saved, configurations={}) != dataclasses.replace(run.plans, configurations={}):
        raise RunError(
            f"{checkpoint.path}: trained on other plans (dataset {saved.dataset_name!r}) than the run "
            f"{run.run_dir} (dataset {run.plans.dataset_name!r}); every fold of a run must come from one dataset"
        )
    record = checkpoint.extra.get("run")
    if record is None:
        return
    if record.get("configuration") != run.configuration or plan_from_dict(record["plan"]) != run.plan:
        raise RunError(
            f"{checkpoint.path}: trained {record.get('configuration')!r} with network "
            f"{record['plan'].get('network')!r}, not the run's {run.configuration!r} with {run.plan.network!r} "
            "and its plan"
        )


def load_model(run: TrainedRun, checkpoint: Path, device: torch.device) -> nn.Module:
    """The network of one fold with its weights, in eval mode on ``device``; the checkpoint must be the run's."""
    try:
        loaded = load_checkpoint(checkpoint, map_location="cpu")
    except CheckpointError as err:
        raise RunError(str(err)) from err
    check_identity(run, loaded)
    state = loaded.model
    model = build_network(run.plans, run.plan, deep_supervision=False)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise RunError(f"{checkpoint}: weights do not fit the network of the folds' plan: {err}") from err
    return model.to(device).eval()


def make_predictor(
    run: TrainedRun,
    device: torch.device,
    mirroring: bool = True,
    step: float = 0.5,
    autocast_dtype: torch.dtype | None = None,
    compile: bool = False,
) -> Predictor:
    """A predictor averaging every fold of ``run``; windows are batched by the plan's batch size.

    ``autocast_dtype`` and ``compile``: as ``Predictor``'s.
    """
    models = [load_model(run, path, device) for path in run.checkpoints]
    logger.info("predicting with %s, folds %s, on %s", run.run_dir, [p.parent.name for p in run.checkpoints], device)
    return Predictor(
        models,
        PreprocessingSpec.from_plans(run.plans, run.configuration, source=str(run.checkpoints[0])),
        run.plan.patch_size,
        run.plans.num_classes,
        device,
        mirror_axes=mirror_axes_for(run.plan) if mirroring else (),
        step=step,
        batch_size=max(1, run.plan.batch_size),
        regions_class_order=run.plans.regions_class_order,
        autocast_dtype=autocast_dtype,
        compile=compile,
    )
