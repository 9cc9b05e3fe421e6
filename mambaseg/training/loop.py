"""The epoch loop that segmentation training and encoder pretraining share, and the checkpoint writer it uses.

Each epoch calls the start-of-epoch hook, reads the learning rate, runs one training epoch and one validation
epoch (the task's parts, each returning its metrics), steps a per-epoch schedule, then on the main process logs
the record ``{**training metrics, **validation metrics, lr, epoch_time}`` and writes ``checkpoint_best.pt`` (if
asked, when the run log calls the epoch its best) and ``checkpoint_latest.pt`` (every few epochs). After the last
epoch it writes ``checkpoint_final.pt``. Other processes run the same epochs and write nothing.

A time budget (``time_budget_s``) bounds the time the epochs take (their ``epoch_time``: training and validation,
not setup or checkpoint writes). When the first epoch has run, the number of epochs that fit the budget at its
pace (at least 1, at most ``num_epochs``) becomes the run's length, and the per-epoch schedule's ``total_steps``
is set to it, so that a poly or cosine decay still reaches its end. That length is the decision: it travels in
the schedule's state (and in the checkpoints' ``extra["time_budget"]``), so a resumed run replays it instead of
timing again. Before each later epoch, the run also stops when that epoch would end past the budget at the mean
pace so far (epochs that slow down); the durations of resumed epochs come from the run log, so a run resumed from
where it stopped stops again. Either way the final checkpoint is written as at a normal end, and the log
says how many epochs ran of how many, and why. Under DDP rank 0 times and decides, and every process follows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mambaseg.planning.checkpoint import save_checkpoint
from mambaseg.training.distributed import all_reduce_sums, rank_and_world
from mambaseg.training.files import CheckpointPaths
from mambaseg.training.run_log import RunLog

Metrics = Mapping[str, float | Sequence[float]]  # named metrics of one epoch, as RunLog.log_epoch takes them

logger = logging.getLogger(__name__)


def epochs_within(budget_s: float, epoch_s: float, num_epochs: int) -> int:
    """How many epochs of ``epoch_s`` seconds fit in ``budget_s``: at least 1 (the one timed), at most num_epochs."""
    if epoch_s <= 0:
        return num_epochs
    return max(1, min(num_epochs, int(budget_s // epoch_s)))


def _from_main(values: Sequence[float], device: torch.device) -> list[float]:
    """Rank 0's ``values`` on every process (a sum to which the other ranks add zeros)."""
    rank, world = rank_and_world()
    if world == 1:
        return [float(v) for v in values]
    return all_reduce_sums([float(v) if rank == 0 else 0.0 for v in values], device)


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
        self.notes: dict[str, Any] = {}
        """More plain state the loop records in every later checkpoint's ``extra`` (e.g. ``time_budget``)."""

    def save(self, kind: str, epoch: int) -> Path:
        """Write the checkpoint ``kind`` (latest, best or final) after ``epoch`` finished epochs."""
        extra = dict(self.extra()) if self.extra is not None else {}
        extra.update(self.notes)
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
        time_budget_s: seconds the epochs may take in all (None: no limit); needs an ``epoch_scheduler`` with a
            ``total_steps`` (``poly``, ``warmup_cosine``), which the budget shortens to the epochs that fit.
        clock: seconds, for timing epochs (``time.perf_counter``; tests pass a fake one).
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
        time_budget_s: float | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if time_budget_s is not None:
            if not time_budget_s > 0:
                raise ValueError(f"time_budget_s must be > 0, got {time_budget_s}")
            if not hasattr(epoch_scheduler, "total_steps"):
                raise ValueError(
                    f"time_budget_s needs a per-epoch schedule with total_steps (poly, warmup_cosine) to fit to the "
                    f"budget; got epoch_scheduler={type(epoch_scheduler).__name__}"
                )
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
        self.time_budget_s = time_budget_s
        self.clock = clock
        self.planned_epochs = num_epochs
        """The run's length: ``num_epochs``, or what the time budget decided after the first epoch."""
        self.epoch_times: list[float] = []
        """The duration of each epoch so far (on the main process, resumed epochs from the run log)."""

    @property
    def _device(self) -> torch.device:
        return self.optimizer.param_groups[0]["params"][0].device

    def run(self, start_epoch: int = 0) -> int:
        """Run the epochs from ``start_epoch`` (0, or the epoch a checkpoint says), then write the final checkpoint.

        Returns:
            The number of epochs the run has done: ``num_epochs``, or fewer where the time budget stopped it.
        """
        self.epoch_times = self._recorded_times(start_epoch)
        if self.time_budget_s is not None and start_epoch > 0:
            self.planned_epochs = int(self.epoch_scheduler.total_steps)  # the decision, restored with the schedule
            self._note(stopped=None)
        elif start_epoch > 0:
            self._fit_schedule_to_length(start_epoch)
        epoch = start_epoch
        while epoch < self.planned_epochs:
            if self._out_of_time(epoch):
                if self.checkpoints is not None and epoch % self.checkpoint_every:
                    self.checkpoints.save("latest", epoch)  # so that resuming starts here and stops again
                break
            self.run_epoch(epoch)
            epoch += 1
        if self.time_budget_s is not None and epoch < self.num_epochs and self.run_log is not None:
            why = (
                f"the first epoch's pace fit {self.planned_epochs}"
                if epoch == self.planned_epochs
                else f"epochs slowed down: epoch {epoch} would have ended past the budget"
            )
            logger.info(
                "time budget: stopped after %d of %d epochs (%s); the epochs took %.1f s of the %.1f s (%g min) "
                "budget, %.1f s each on average",
                epoch,
                self.num_epochs,
                why,
                sum(self.epoch_times),
                self.time_budget_s,
                self.time_budget_s / 60,
                sum(self.epoch_times) / max(len(self.epoch_times), 1),
            )
        if self.checkpoints is not None:
            self.checkpoints.save("final", epoch)
        return epoch

    def _fit_schedule_to_length(self, start_epoch: int) -> None:
        """A resumed run without a time budget ends after ``num_epochs``: a schedule restored for another length
        (a run continued with a larger ``trainer.num_epochs``) is extended to it, its rate set for this epoch."""
        if start_epoch > self.num_epochs:
            raise ValueError(
                f"trainer.num_epochs={self.num_epochs}: the run has done {start_epoch} epochs already; continue it "
                f"with trainer.num_epochs >= {start_epoch}"
            )
        scheduler = self.epoch_scheduler
        restored = getattr(scheduler, "total_steps", None)
        if restored is None or restored == self.num_epochs:
            return
        scheduler.total_steps = self.num_epochs
        for group, lr in zip(self.optimizer.param_groups, scheduler.get_lr(), strict=True):
            group["lr"] = lr
        scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]
        if self.run_log is not None:
            logger.info(
                "continuing with trainer.num_epochs=%d: the learning-rate schedule, laid out for %d epochs, now ends "
                "after epoch %d; epoch %d starts at lr %.3g",
                self.num_epochs,
                restored,
                self.num_epochs - 1,
                start_epoch,
                self.optimizer.param_groups[0]["lr"],
            )

    def _recorded_times(self, start_epoch: int) -> list[float]:
        if self.run_log is None:
            return []
        return [float(r.get("epoch_time", 0.0)) for r in self.run_log.records[:start_epoch]]

    def _out_of_time(self, epoch: int) -> bool:
        """Whether the next epoch would end past the budget at the mean pace so far (rank 0 decides for all)."""
        if self.time_budget_s is None or epoch == 0:
            return False
        spent = sum(self.epoch_times)
        pace = spent / max(len(self.epoch_times), 1)
        stop = _from_main([float(spent + pace > self.time_budget_s * (1 + 1e-9))], self._device)[0] > 0
        if stop:
            self._note(stopped=epoch)
        return stop

    def _fit_to_budget(self, epoch_s: float) -> None:
        """After the first epoch: the run's length at that pace (rank 0's), and the schedule fitted to it."""
        planned = int(_from_main([epochs_within(self.time_budget_s, epoch_s, self.num_epochs)], self._device)[0])
        self.planned_epochs = planned
        self.epoch_scheduler.total_steps = planned
        self._note(stopped=None)
        if self.run_log is not None:
            logger.info(
                "time budget %g min: the first epoch took %.1f s, so %d of %d epochs fit; the learning-rate "
                "schedule now ends after epoch %d",
                self.time_budget_s / 60,
                epoch_s,
                planned,
                self.num_epochs,
                planned - 1,
            )

    def _note(self, stopped: int | None) -> None:
        if self.checkpoints is not None:
            self.checkpoints.notes["time_budget"] = {
                "budget_s": float(self.time_budget_s),
                "num_epochs": int(self.num_epochs),
                "planned_epochs": int(self.planned_epochs),
                "stopped_at": stopped,
            }

    def run_epoch(self, epoch: int) -> None:
        """One epoch: hook, training, validation, per-epoch schedule step, then log and checkpoints."""
        started = self.clock()
        if self.on_epoch_start is not None:
            self.on_epoch_start(epoch)
        lr = self.optimizer.param_groups[0]["lr"]
        train_metrics = self.train_epoch(epoch)
        val_metrics = self.validate_epoch(epoch)
        epoch_time = self.clock() - started
        self.epoch_times.append(epoch_time)
        if self.time_budget_s is not None and epoch == 0:
            self._fit_to_budget(epoch_time)
        if self.epoch_scheduler is not None:
            self.epoch_scheduler.step()
        if self.run_log is None or self.checkpoints is None:
            return
        record = self.run_log.log_epoch(epoch, **train_metrics, **val_metrics, lr=lr, epoch_time=epoch_time)
        if self.save_best and record["is_best"]:
            self.checkpoints.save("best", epoch + 1)
        if (epoch + 1) % self.checkpoint_every == 0:
            self.checkpoints.save("latest", epoch + 1)
