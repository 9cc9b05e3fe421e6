"""Setting up one training run from the plans: folders, network, loss, optimiser, batches, resume.

A run lives in ``WORKSPACE/DATASET/runs/CONFIGURATION__NETWORK/fold_K/`` and holds the resolved
config (``config.yaml``), the plan it trained with (``plan.json``), the checkpoints, ``metrics.csv``,
``progress.png``, ``training.log`` and, after training, ``validation/``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mambaseg.data.dataset import Dataset
from mambaseg.data.splits import load_or_create_splits
from mambaseg.planning.plans import ConfigurationPlan, Plans

log = logging.getLogger(__name__)

SPLITS_FILE = "splits.json"
FOLD_ALL = "all"


@dataclass(frozen=True)
class RunSpec:
    """What to train: the dataset's plans, one configuration and network, one fold."""

    workspace: Path
    dataset: Dataset
    plans: Plans
    configuration: str
    plan: ConfigurationPlan
    fold: str

    @property
    def run_dir(self) -> Path:
        name = f"{self.configuration}__{self.plan.network}"
        return self.workspace / self.dataset.name / "runs" / name / f"fold_{self.fold}"


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


def fold_cases(workspace: Path, dataset: Dataset, fold: str) -> tuple[list[str], list[str]]:
    """(training, validation) case names of a fold from ``splits.json`` (written on first use); ``all``: every case."""
    names = [case.name for case in dataset.cases]
    if fold == FOLD_ALL:
        return names, names
    splits = load_or_create_splits(workspace / dataset.name / SPLITS_FILE, names)
    if not fold.isdigit() or int(fold) >= len(splits):
        raise ValueError(f"fold {fold!r} does not exist: {SPLITS_FILE} has folds 0-{len(splits) - 1}, or use 'all'")
    split = splits[int(fold)]
    return list(split["train"]), list(split["val"])


@torch.no_grad()
def count_outputs(model: nn.Module, in_channels: int, patch_size: Sequence[int]) -> int | None:
    """How many outputs a deep-supervised network returns (None: a single tensor), from a zero patch's forward."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = model(torch.zeros(1, in_channels, *patch_size, device=device))
    model.train(was_training)
    return len(out) if isinstance(out, list | tuple) else None


def write_run_files(run_dir: Path, config: Mapping[str, Any], plan: ConfigurationPlan) -> None:
    """The resolved config and the plan used, beside the checkpoints."""
    from omegaconf import OmegaConf

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(dict(config))))
    (run_dir / "plan.json").write_text(json.dumps(dataclasses.asdict(plan), indent=2) + "\n")
