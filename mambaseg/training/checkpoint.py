"""Resuming training from a checkpoint: optimiser, schedule, grad-scaler and RNG states put back in place."""

from __future__ import annotations

import logging
import random

import numpy as np
import torch
from torch import nn

from mambaseg.planning.checkpoint import Checkpoint, CheckpointError, unwrap_model

logger = logging.getLogger(__name__)


def restore_training_state(
    checkpoint: Checkpoint,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    grad_scaler: torch.amp.GradScaler | None = None,
) -> int:
    """Load weights and the optimiser, schedule and grad-scaler states into freshly built objects.

    Returns:
        The epoch to resume at.
    """
    unwrap_model(model).load_state_dict(checkpoint.model)
    for name, target, state in (
        ("optimizer", optimizer, checkpoint.optimizer),
        ("scheduler", scheduler, checkpoint.scheduler),
    ):
        if target is None:
            continue
        if state is None:
            raise CheckpointError(checkpoint.path, f"holds no {name} state to resume from")
        target.load_state_dict(state)
    if grad_scaler is not None:
        if checkpoint.grad_scaler:
            grad_scaler.load_state_dict(checkpoint.grad_scaler)
        elif grad_scaler.is_enabled():
            logger.warning(
                "%s: saved without an active grad scaler; mixed precision restarts its scale", checkpoint.path
            )
    return checkpoint.epoch


def restore_rng_state(checkpoint: Checkpoint) -> None:
    """Set Python's, NumPy's, torch's and CUDA's generators to their saved states."""
    rng = checkpoint.rng
    version, internal, gauss_next = rng["python"]
    random.setstate((version, tuple(internal), gauss_next))
    saved = rng["numpy"]
    keys = np.asarray(saved["keys"].cpu().numpy(), dtype=np.uint32)
    np.random.set_state((saved["kind"], keys, saved["pos"], saved["has_gauss"], saved["cached_gaussian"]))
    torch.set_rng_state(rng["torch"].cpu())
    if "cuda" in rng and torch.cuda.is_available():
        states = rng["cuda"]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in states])
        else:
            logger.warning(
                "%s: saved %d CUDA generator states, %d devices now; CUDA generators not restored",
                checkpoint.path,
                len(states),
                torch.cuda.device_count(),
            )
