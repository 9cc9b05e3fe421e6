"""Validating a fold again from a saved checkpoint, without training (nnU-Net's ``--val``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from mambaseg.planning.checkpoint import load_checkpoint
from mambaseg.planning.model import build_network
from mambaseg.training.run import validate_fold
from mambaseg.training.setup import RunSpec, fold_cases

CHECKPOINTS = {"final": "checkpoint_final.pt", "best": "checkpoint_best.pt", "latest": "checkpoint_latest.pt"}


def validate_checkpoint(
    spec: RunSpec, config: Mapping[str, Any], device: torch.device, checkpoint: str = "final"
) -> dict[str, Any]:
    """Predict and score the fold's validation cases with the weights of ``checkpoint`` (final, best or latest)."""
    path = spec.run_dir / CHECKPOINTS[checkpoint]
    if not path.is_file():
        raise ValueError(f"--val: {path} does not exist; train the fold first (or choose another --val-checkpoint)")
    model = build_network(spec.plans, spec.plan, deep_supervision=False).to(device)
    model.load_state_dict(load_checkpoint(path, map_location=device).model)
    _, val_names = fold_cases(spec.workspace, spec.dataset, spec.fold)
    return validate_fold(spec, model, val_names, device, float(config["validation"]["step"]))
