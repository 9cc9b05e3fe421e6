"""Setting up one training run from the plans: what to train, the plan for another network, the run's files.

The workspace layer (``mambaseg.workspace``) names the fold's files and hands them over in a ``RunSpec``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from mambaseg.data.dataset import Dataset
from mambaseg.io.atomic import write_atomically
from mambaseg.planning.plans import ConfigurationPlan, Plans
from mambaseg.training.files import RunPaths
from mambaseg.training.run_log import write_run_config

log = logging.getLogger(__name__)


class FoldPaths(RunPaths, Protocol):
    """Where a training fold's files go (the workspace layer's ``FoldFiles`` provides them)."""

    @property
    def plan(self) -> Path: ...


@dataclass(frozen=True)
class RunSpec:
    """What to train: the dataset's plans, one configuration and network, one fold's cases and files.

    Args:
        dataset: the raw dataset (labels, ignore label).
        plans: the dataset's plans.
        configuration: the configuration's name.
        plan: the configuration plan to train (the planned one, or one planned for another network).
        fold: the fold's name, ``0``-``4`` or ``all``.
        train_cases: names of the cases to train on.
        val_cases: names of the cases to validate on.
        preprocessed: the configuration's preprocessed folder.
        files: where the fold's files go.
        previous_stage: a cascade stage's previous stage masks on the preprocessed grid, case -> npz (training and
            validation cases); None for other configurations.
    """

    dataset: Dataset
    plans: Plans
    configuration: str
    plan: ConfigurationPlan
    fold: str
    train_cases: list[str]
    val_cases: list[str]
    preprocessed: Path
    files: FoldPaths
    previous_stage: Mapping[str, Path] | None = None

    @property
    def run_dir(self) -> Path:
        return self.files.folder


def choose_plan(plans: Plans, configuration: str, network: str | None, replan) -> ConfigurationPlan:
    """The plan of ``configuration``; for another network than planned, ``replan(network)`` plans that one.

    Args:
        plans: the dataset's plans.
        configuration: ``2d``, ``3d_fullres`` or ``3d_lowres``.
        network: a registry name, or None for the planned network.
        replan: network name -> Plans planned for that network (same fingerprint and budget).
    """
    if configuration not in plans.configurations:
        raise ValueError(
            f"plans of {plans.dataset_name} have no configuration {configuration!r}; "
            f"planned: {', '.join(plans.configurations)}"
        )
    plan = plans.configurations[configuration]
    if network is None or network == plan.network:
        return plan
    other = replan(network).configurations.get(configuration)
    if other is None:
        raise ValueError(f"configuration {configuration!r} cannot be planned for network {network!r}")
    return other


@torch.no_grad()
def count_outputs(model: nn.Module, in_channels: int, patch_size: Sequence[int]) -> int | None:
    """How many outputs a deep-supervised network returns (None: a single tensor), from a zero patch's forward."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = model(torch.zeros(1, in_channels, *patch_size, device=device))
    model.train(was_training)
    return len(out) if isinstance(out, list | tuple) else None


def write_run_files(files: FoldPaths, config: Mapping[str, Any], plan: ConfigurationPlan) -> None:
    """The resolved config and the plan used, beside the checkpoints."""
    write_run_config(files.config, config)
    plan_json = json.dumps(dataclasses.asdict(plan), indent=2) + "\n"
    write_atomically(files.plan, lambda handle: handle.write(plan_json.encode()))
