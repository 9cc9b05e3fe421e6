"""The epoch loop that segmentation training and encoder pretraining share, and the checkpoint writer it uses.

Each epoch calls the start-of-epoch hook, reads the learning rate, runs one training epoch and one validation
epoch (the task's parts, each returning its metrics), steps a per-epoch schedule, then on the main process logs
the record ``{**training metrics, **validation metrics, lr, epoch_time}`` and writes ``checkpoint_best.pt`` (if
asked, when the run log calls the epoch its best) and ``checkpoint_latest.pt`` (every few epochs). After the last
epoch it writes ``checkpoint_final.pt``. Other processes run the same epochs and write nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mambaseg.planning.checkpoint import save_checkpoint
from mambaseg.training.files import CheckpointPaths
from mambaseg.training.run_log import RunLog

Metrics = Mapping[str, float | Sequence[float]]  # named metrics of one epoch, as RunLog.log_epoch takes them


class CheckpointWriter:
    """Writes the run's checkpoints (main process only), with the run log's state in ``extra["run_log"]``.

    Args:
        checkpoints: where the checkpoints go.
        model: the network (possibly DDP-wrapped).
        optimizer: its optimiser.
        scheduler: its learning-rate schedule.
        grad_scaler: its grad scaler.
        run_log: the run log (None: none saved).
        plans: the plans trained with (None for pretraining).
        config: the resolved config.
        extra: returns more plain state for ``extra`` at each save (e.g. EMA weights).
    """

    def __init__(
        self,
        checkpoints: CheckpointPaths,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        grad_scaler: torch.amp.GradScaler,
        run_log: RunLog | None,
        plans: Mapping[str, Any] | None,
        config: Mapping[str, Any],
        extra: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        self.checkpoints = checkpoints
        self.parts = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "grad_scaler": grad_scaler}
        self.run_log = run_log
        self.plans = plans
        self.config = config
        self.extra = extra

    def save(self, kind: str, epoch: int) -> Path:
        """Write the checkpoint ``kind`` (latest, best or final) after ``epoch`` finished epochs."""
        extra = dict(self.extra()) if self.extra is not None else {}
        if self.run_log is not None:
            extra["run_log"] = self.run_log.state_dict()
        return save_checkpoint(
            getattr(self.checkpoints, kind),
            epoch=epoch,
            plans=self.plans,
            config=self.config,
            extra=extra,
            **self.parts,
        )


class EpochLoop:
    """Runs a task's epochs from a start epoch to the last, logging and checkpointing them.

    Args:
        train_epoch: epoch -> the metrics of one training epoch (every process runs it).
        validate_epoch: epoch -> the metrics of one validation epoch.
        optimizer: its first parameter group's learning rate is logged as ``lr``, read as the epoch starts.
        num_epochs: how many epochs the run has.
        checkpoint_every: write ``checkpoint_latest.pt`` after every this many epochs.
        run_log: the main process's run log (None elsewhere: nothing logged).
        checkpoints: the main process's checkpoint writer (None elsewhere: nothing written).
        epoch_scheduler: stepped after each validation epoch; None where ``train_epoch`` steps the schedule
            itself (per iteration).
        on_epoch_start: called with the epoch number before it trains (e.g. to freeze or unfreeze layers).
        save_best: write ``checkpoint_best.pt`` whenever the run log's ``best`` metrics make an epoch the best.
    """

    def __init__(
        self,
        train_epoch: Callable[[int], Metrics],
        validate_epoch: Callable[[int], Metrics],
        optimizer: torch.optim.Optimizer,
        num_epochs: int,
        checkpoint_every: int,
        run_log: RunLog | None = None,
        checkpoints: CheckpointWriter | None = None,
        epoch_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        on_epoch_start: Callable[[int], None] | None = None,
        save_best: bool = False,
    ) -> None:
        self.train_epoch = train_epoch
        self.validate_epoch = validate_epoch
        self.optimizer = optimizer
        self.num_epochs = num_epochs
        self.checkpoint_every = checkpoint_every
        self.run_log = run_log
        self.checkpoints = checkpoints
        self.epoch_scheduler = epoch_scheduler
        self.on_epoch_start = on_epoch_start
        self.save_best = save_best

    def run(self, start_epoch: int = 0) -> None:
        """Run the epochs from ``start_epoch`` (0, or the epoch a checkpoint says), then write the final checkpoint."""
        for epoch in range(start_epoch, self.num_epochs):
            self.run_epoch(epoch)
        if self.checkpoints is not None:
            self.checkpoints.save("final", self.num_epochs)

    def run_epoch(self, epoch: int) -> None:
        """One epoch: hook, training, validation, per-epoch schedule step, then log and checkpoints."""
        started = time.perf_counter()
        if self.on_epoch_start is not None:
            self.on_epoch_start(epoch)
        lr = self.optimizer.param_groups[0]["lr"]
        train_metrics = self.train_epoch(epoch)
        val_metrics = self.validate_epoch(epoch)
        if self.epoch_scheduler is not None:
            self.epoch_scheduler.step()
        if self.run_log is None or self.checkpoints is None:
            return
        record = self.run_log.log_epoch(
            epoch, **train_metrics, **val_metrics, lr=lr, epoch_time=time.perf_counter() - started
        )
        if self.save_best and record["is_best"]:
            self.checkpoints.save("best", epoch + 1)
        if (epoch + 1) % self.checkpoint_every == 0:
            self.checkpoints.save("latest", epoch + 1)
