"""Finding a trained run's folds and turning their checkpoints into a ``Predictor``.

A run folder is ``WORKSPACE/DATASET/runs/CONFIGURATION__NETWORK`` with one ``fold_K`` subfolder per
trained fold, each holding ``plan.json`` (the configuration plan it trained with) and its checkpoints.
The plans (channels, labels, transpose, normalisation) come from the checkpoint; the configuration
entry is replaced by the fold's ``plan.json``, which is what was trained when the network differs
from the planned one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mambaseg.inference.predictor import Predictor
from mambaseg.planning.checkpoint import CheckpointError, load_checkpoint
from mambaseg.planning.model import build_network, mirror_axes_for
from mambaseg.planning.plans import ConfigurationPlan, Normalization, Plans, PlansError, plans_from_dict
from mambaseg.preprocessing.case import PreprocessingSpec

logger = logging.getLogger(__name__)

CHECKPOINTS = {"final": "checkpoint_final.pt", "best": "checkpoint_best.pt"}
PLAN_FILE = "plan.json"


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


def _read_plan(path: Path) -> ConfigurationPlan:
    try:
        data = json.loads(path.read_text())
        normalization = [Normalization(n["scheme"], dict(n.get("params", {}))) for n in data["normalization"]]
        return ConfigurationPlan(**{**data, "normalization": normalization})
    except OSError as err:
        raise RunError(f"{path}: cannot read the fold's plan: {err.strerror}") from err
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise RunError(f"{path}: not a valid configuration plan: {err}") from err


def _fold_dirs(run_dir: Path, folds: Sequence[str] | None, checkpoint_name: str) -> list[Path]:
    if folds:
        dirs = [run_dir / f"fold_{fold}" for fold in folds]
        for folder in dirs:
            if not (folder / checkpoint_name).is_file():
                raise RunError(f"{folder / checkpoint_name}: no such checkpoint (fold {folder.name[5:]!r})")
        return dirs
    dirs = sorted(p for p in run_dir.glob("fold_*") if (p / checkpoint_name).is_file())
    if not dirs:
        raise RunError(f"{run_dir}: no fold_* folder holds {checkpoint_name}; train a fold first")
    return dirs


def find_run(run_dir: str | Path, folds: Sequence[str] | None = None, checkpoint: str = "final") -> TrainedRun:
    """The run in ``run_dir`` with the given folds (default: every fold that has the checkpoint).

    Args:
        run_dir: a ``runs/CONFIGURATION__NETWORK`` folder.
        folds: fold names such as ``0`` or ``all``.
        checkpoint: ``final`` or ``best``.

    Raises:
        RunError: the folder, a fold, a checkpoint or a plan is missing, or the folds' plans differ.
    """
    run_dir = Path(run_dir)
    if checkpoint not in CHECKPOINTS:
        raise RunError(f"checkpoint {checkpoint!r} is not one of {', '.join(CHECKPOINTS)}")
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such run folder")
    if "__" not in run_dir.name:
        hint = " (a fold folder: pass its parent)" if run_dir.name.startswith("fold_") else ""
        raise RunError(f"{run_dir}: not a run folder named CONFIGURATION__NETWORK{hint}")
    configuration = run_dir.name.split("__", 1)[0]
    dirs = _fold_dirs(run_dir, folds, CHECKPOINTS[checkpoint])
    plans_by_fold = [_read_plan(folder / PLAN_FILE) for folder in dirs]
    for folder, plan in zip(dirs[1:], plans_by_fold[1:], strict=True):
        if plan != plans_by_fold[0]:
            raise RunError(f"{folder / PLAN_FILE}: differs from {dirs[0] / PLAN_FILE}; folds of one run share one plan")
    first = dirs[0] / CHECKPOINTS[checkpoint]
    try:
        saved = load_checkpoint(first).plans
        if saved is None:
            raise RunError(f"{first}: the checkpoint holds no plans")
        plans = plans_from_dict(saved, source=str(first))
    except (CheckpointError, PlansError) as err:
        raise RunError(str(err)) from err
    plans = dataclasses.replace(plans, configurations={**plans.configurations, configuration: plans_by_fold[0]})
    return TrainedRun(run_dir, configuration, plans, tuple(folder / CHECKPOINTS[checkpoint] for folder in dirs))


def load_model(run: TrainedRun, checkpoint: Path, device: torch.device) -> nn.Module:
    """The network of one fold with its weights, in eval mode on ``device``."""
    try:
        state = load_checkpoint(checkpoint, map_location="cpu").model
    except CheckpointError as err:
        raise RunError(str(err)) from err
    model = build_network(run.plans, run.plan, deep_supervision=False)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise RunError(f"{checkpoint}: weights do not fit the network of {PLAN_FILE}: {err}") from err
    return model.to(device).eval()


def resolve_device(choice: str) -> torch.device:
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``; plain ``cuda`` means ``cuda:LOCAL_RANK``."""
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(choice)
    except RuntimeError as err:
        raise RunError(f"--device {choice!r}: not a device (auto, cpu, cuda or cuda:N)") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunError(f"--device {choice!r}: CUDA is not available on this machine")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def make_predictor(run: TrainedRun, device: torch.device, mirroring: bool = True, step: float = 0.5) -> Predictor:
    """A predictor averaging every fold of ``run``; windows are batched by the plan's batch size."""
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
    )
