"""Resuming a run from its checkpoints: which one, and putting weights, optimiser, schedule, grad-scaler, RNG
and run-log states back in place.

A run folder holds ``checkpoint_latest.pt`` (every few epochs), ``checkpoint_best.pt`` (segmentation) and, once the
run is finished, ``checkpoint_final.pt``. Training and pretraining resume the same way.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mambaseg.planning.checkpoint import Checkpoint, CheckpointError, unwrap_model
from mambaseg.training.files import RunPaths
from mambaseg.training.run_log import RunLog

logger = logging.getLogger(__name__)


def resume_checkpoint(files: RunPaths, continue_training: bool) -> Path | None:
    """The checkpoint a run starts from: with ``continue_training`` the latest one, else the final one, else none.

    Args:
        files: the run's files.
        continue_training: resume an interrupted (or finished) run.

    Raises:
        ValueError: ``continue_training`` without a checkpoint; or, without ``continue_training``, a folder that
            already holds a run, finished (a final checkpoint) or interrupted (any checkpoint or metrics):
            starting over would overwrite it.
    """
    if not continue_training:
        if files.checkpoints.final.exists():
            raise ValueError(
                f"{files.folder} already holds a finished run; continue it (continue_training), "
                "or delete the folder to start over"
            )
        started = [p for p in (files.checkpoints.latest, files.checkpoints.best, files.logs.metrics) if p.exists()]
        if started:
            raise ValueError(
                f"{files.folder} holds an interrupted run ({', '.join(p.name for p in started)}); resume it "
                "(continue_training), or delete the folder to start over on purpose"
            )
        return None
    for path in (files.checkpoints.latest, files.checkpoints.final):
        if path.is_file():
            return path
    raise ValueError(f"continue_training: {files.folder} has no checkpoint to resume from")


def restore_run(
    checkpoint: Checkpoint,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    grad_scaler: torch.amp.GradScaler,
    run_log: RunLog | None,
) -> int:
    """Put a run back where ``checkpoint`` left it: weights, optimiser, schedule, scaler, RNGs and run log.

    Args:
        checkpoint: the loaded checkpoint, its run log's state in ``extra["run_log"]``.
        model: the freshly built network (possibly DDP-wrapped).
        optimizer: its optimiser.
        scheduler: its learning-rate schedule.
        grad_scaler: its grad scaler.
        run_log: the main process's run log (None elsewhere).

    Returns:
        The epoch to resume at.
    """
    epoch = restore_training_state(checkpoint, model, optimizer, scheduler, grad_scaler)
    restore_rng_state(checkpoint)
    if run_log is not None:
        run_log.load_state_dict(checkpoint.extra["run_log"])
    logger.info("resuming %s at epoch %d", checkpoint.path, epoch)
    return epoch


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
