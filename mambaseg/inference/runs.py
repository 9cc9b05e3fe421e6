"""Trained runs and the models made of them, turned into the prediction pipeline's parts.

Each fold has the configuration plan it trained with (its ``plan.json``) and a checkpoint. The plans (channels,
labels, transpose, normalisation) come from the checkpoint; the configuration entry is replaced by the folds'
plan, which is what was trained when the network differs from the planned one. The workspace layer
(``mambaseg.workspace``) finds the files.

A ``ModelDescription`` is a whole model as data: the runs whose probabilities are averaged (each with its folds and,
for a cascade stage, the model that feeds it) and the postprocessing after them. ``build_pipeline`` makes it the
pipeline of ``mambaseg.inference.pipeline``; ``describe`` writes it as the JSON an exported model records.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mambaseg.inference.pipeline import (
    Ensemble,
    ModelStage,
    Pipeline,
    ProbabilityModel,
    StagePlan,
    WindowSettings,
    mask_of,
)
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
    previous: ModelDescription | None = None  # a cascade stage: the model whose masks it takes as input

    @property
    def plan(self) -> ConfigurationPlan:
        return self.plans.configurations[self.configuration]

    @property
    def label_names(self) -> dict[int, str]:
        """Class index -> label name (background included)."""
        return {value: name for name, value in self.plans.labels.items() if isinstance(value, int)}

    @property
    def fold_names(self) -> list[str]:
        """The folds' names (``0``, ``all``), in checkpoint order."""
        return [Path(path).parent.name.removeprefix("fold_") for path in self.checkpoints]


@dataclass(frozen=True)
class ModelDescription:
    """A whole model: the runs averaged (each with its folds and its previous stage), then the postprocessing.

    Attributes:
        source: the file or folder that named it (inference instructions, a manifest, a run folder), for messages.
        runs: one or more; several form an ensemble whose probabilities are averaged.
        postprocessing: steps applied to the mask.
    """

    source: Path
    runs: tuple[TrainedRun, ...]
    postprocessing: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The runs' folder names joined by ``+``, for the outputs' records."""
        return " + ".join(run.run_dir.name for run in self.runs)

    def all_runs(self) -> list[TrainedRun]:
        """Every run the model needs, previous stages included, each once, in the order they appear."""
        found: list[TrainedRun] = []
        for run in self.runs:
            for needed in ([] if run.previous is None else run.previous.all_runs()) + [run]:
                if needed not in found:
                    found.append(needed)
        return found

    def describe(self, entry_of: Callable[[TrainedRun], str]) -> list[dict[str, Any]]:
        """The runs as JSON: ``[{"run": entry_of(run), "folds": [...], "previous": [...]}]`` ("previous" for a
        cascade stage: the runs of its previous stage's model, described the same way)."""
        described = []
        for run in self.runs:
            entry: dict[str, Any] = {"run": entry_of(run), "folds": run.fold_names}
            if run.previous is not None:
                entry["previous"] = run.previous.describe(entry_of)
            described.append(entry)
        return described


def check_compatible(runs: Sequence[TrainedRun], source: Path) -> None:
    """RunError unless the runs share channels and labels (``source`` names the file that lists them)."""
    first = runs[0]
    for run in runs[1:]:
        for what, mine, theirs in (
            ("channels", run.plans.channel_names, first.plans.channel_names),
            ("labels", run.plans.labels, first.plans.labels),
        ):
            if mine != theirs:
                raise RunError(
                    f"{source}: runs {first.run_dir} and {run.run_dir} have different {what} ({theirs} vs {mine}); "
                    "only runs of one dataset can be averaged"
                )


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
        loaded = load_checkpoint(first)
        if loaded.plans is None:
            raise RunError(f"{first}: the checkpoint holds no plans")
        plans = plans_from_dict(loaded.plans, source=str(first))
    except (CheckpointError, PlansError) as err:
        raise RunError(str(err)) from err
    plans = dataclasses.replace(plans, configurations={**plans.configurations, configuration: plans_by_fold[0]})
    run = TrainedRun(run_dir, configuration, plans, tuple(checkpoint for _, checkpoint in folds))
    check_identity(run, loaded)  # an edited plan.json is refused now, before any network is built
    return run


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
    if record.get("configuration") != run.configuration:
        raise RunError(
            f"{checkpoint.path}: trained configuration {record.get('configuration')!r}, not the run's "
            f"{run.configuration!r}"
        )
    trained = dataclasses.asdict(plan_from_dict(record["plan"]))
    given = dataclasses.asdict(run.plan)
    differing = [key for key in given if given[key] != trained.get(key)]
    if differing:
        shown = "; ".join(f"{key}: {given[key]!r} in plan.json, {trained.get(key)!r} trained" for key in differing[:3])
        raise RunError(
            f"{checkpoint.path}: its fold's plan.json differs from the plan the checkpoint was trained with ({shown}); "
            "restore the fold's plan.json (a plan is changed by planning and training again, not by editing it)"
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


def stage_plan(plans: Plans, configuration: str, source: str, plan: ConfigurationPlan | None = None) -> StagePlan:
    """The stage plan of ``plans``' configuration ``configuration`` (``source`` names where it comes from), with
    ``plan`` in place of the configuration's own where given (a fold trained with another network than planned)."""
    plan = plans.configurations[configuration] if plan is None else plan
    return StagePlan(
        spec=PreprocessingSpec.from_plans(plans, configuration, source=source),
        patch_size=tuple(plan.patch_size),
        num_classes=plans.num_classes,
        mirror_axes=tuple(mirror_axes_for(plan)),
        batch_size=max(1, plan.batch_size),
        regions_class_order=plans.regions_class_order,
        previous_labels=tuple(int(label) for label in plan.previous_stage_labels or ()),
    )


def build_model(description: ModelDescription, settings: WindowSettings) -> ProbabilityModel:
    """The model of ``description``: one stage per run (its folds' networks), averaged when there are several."""
    stages = []
    for run in description.runs:
        networks = [load_model(run, path, settings.device) for path in run.checkpoints]
        logger.info("predicting with %s, folds %s, on %s", run.run_dir, run.fold_names, settings.device)
        previous = None
        if run.plan.previous_stage is not None:
            if run.previous is None:
                raise RunError(f"{run.run_dir}: a cascade stage after {run.plan.previous_stage!r} without that stage")
            logger.info("cascade: %s takes the %s masks as input", run.run_dir, run.plan.previous_stage)
            previous = mask_of(build_model(run.previous, settings))
        plan = stage_plan(run.plans, run.configuration, source=str(run.checkpoints[0]))
        stages.append(ModelStage(networks, plan, settings, previous=previous))
    return stages[0] if len(stages) == 1 else Ensemble(stages)


def build_pipeline(description: ModelDescription, settings: WindowSettings) -> Pipeline:
    """The whole pipeline of ``description``: its model, labels, then its postprocessing."""
    return Pipeline(build_model(description, settings), description.postprocessing)
