"""The training loop. Loss, batches, optimisation, logging and checkpointing are parts handed to it.

Dimension letters: b batch, c channels, k classes (or regions), *patch the patch axes.

The trainer hands its epochs to the shared ``EpochLoop``. Each epoch runs ``iterations_per_epoch`` training
steps and ``val_iterations`` validation steps, steps the learning-rate schedule once, and logs the losses and
the pseudo Dice per class (true and false positives and negatives summed over the epoch's validation patches,
as nnU-Net does). The checkpoint writer keeps ``checkpoint_best.pt`` (best moving average of the pseudo Dice),
``checkpoint_latest.pt`` (every few epochs) and ``checkpoint_final.pt``. Under DDP the counts and losses are
summed over processes and only the main process writes files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mambaseg.training.distributed import all_reduce_sum, all_reduce_sums, rank_and_world
from mambaseg.training.loop import CheckpointWriter, EpochLoop
from mambaseg.training.run_log import RunLog, epoch_progress
from mambaseg.training.step import amp_autocast, float32_loss, optimizer_step

Batch = Mapping[str, torch.Tensor]  # {"image": (b, c, *patch) float, "label": (b, 1, *patch) int}


@dataclass(frozen=True)
class LoopSettings:
    num_epochs: int
    iterations_per_epoch: int
    val_iterations: int
    grad_clip: float | None = 12.0
    checkpoint_every: int = 50
    amp: bool = True
    time_budget_minutes: float | None = None

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> LoopSettings:
        return cls(
            num_epochs=int(cfg["num_epochs"]),
            iterations_per_epoch=int(cfg["iterations_per_epoch"]),
            val_iterations=int(cfg["val_iterations"]),
            grad_clip=None if cfg.get("grad_clip") is None else float(cfg["grad_clip"]),
            checkpoint_every=int(cfg.get("checkpoint_every", 50)),
            amp=bool(cfg.get("amp", True)),
            time_budget_minutes=None if cfg.get("time_budget_minutes") is None else float(cfg["time_budget_minutes"]),
        )


def pseudo_dice_counts(
    logits: torch.Tensor,
    target: torch.Tensor,
    regions: Sequence[Sequence[int]] | None = None,
    ignore_label: int | None = None,
) -> torch.Tensor:
    """True positives, false positives and false negatives per foreground class (or region), (3, k').

    Args:
        logits: (b, k, *patch); softmax classes (background first) or one sigmoid channel per region.
        target: label map (b, 1, *patch).
        regions: the classes of each region for region-based training, else None.
        ignore_label: voxels with this label count nowhere.
    """
    label = target[:, 0].long()  # (b, *patch)
    valid = torch.ones_like(label, dtype=torch.bool) if ignore_label is None else label != ignore_label
    if regions is None:
        predicted = logits.argmax(1)  # (b, *patch)
        classes = range(1, logits.shape[1])
        pred = torch.stack([predicted == c for c in classes], 1)  # (b, k - 1, *patch)
        true = torch.stack([label == c for c in classes], 1)
    else:
        pred = logits > 0  # sigmoid > 0.5
        true = torch.stack([torch.isin(label, torch.tensor(list(r), device=label.device)) for r in regions], 1)
    valid = valid[:, None]
    dims = [0, *range(2, pred.dim())]
    tp = (pred & true & valid).sum(dims)
    fp = (pred & ~true & valid).sum(dims)
    fn = (~pred & true & valid).sum(dims)
    return torch.stack([tp, fp, fn]).double()


def dice_from_counts(counts: torch.Tensor) -> list[float]:
    """Dice per class from (3, k') counts; NaN for a class absent from prediction and target."""
    tp, fp, fn = counts
    denominator = 2 * tp + fp + fn
    dice = torch.where(denominator > 0, 2 * tp / denominator.clamp(min=1), torch.full_like(tp, float("nan")))
    return dice.tolist()


class Trainer:
    """Segmentation's training and validation epochs, run by the ``EpochLoop``.

    Args:
        model: the network (possibly DDP-wrapped), on ``device``.
        loss: maps (network output, label map (b, 1, *patch)) to a scalar; handles deep supervision itself.
        optimizer: the optimiser.
        scheduler: stepped once per epoch.
        train_batches: epoch -> iterator over that epoch's training batches (deterministic per epoch, so
            resuming repeats nothing and skips nothing).
        val_batches: epoch -> iterator over that epoch's validation batches.
        settings: epochs, iterations, gradient clipping, checkpoint interval, AMP, time budget.
        device: where the steps run.
        run_log: the main process's log (None elsewhere).
        checkpoints: the main process's checkpoint writer (None elsewhere).
        regions: region-based training's classes per region, else None (softmax).
        ignore_label: label value excluded from the pseudo Dice.
        on_epoch_start: called with the epoch number before each epoch trains (e.g. to freeze or unfreeze layers).
        memory_format: the format batches are laid out in, the network's (``step.training_memory_format``).
    """

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        train_batches: Callable[[int], Iterator[Batch]],
        val_batches: Callable[[int], Iterator[Batch]],
        settings: LoopSettings,
        device: torch.device,
        grad_scaler: torch.amp.GradScaler,
        run_log: RunLog | None = None,
        checkpoints: CheckpointWriter | None = None,
        regions: Sequence[Sequence[int]] | None = None,
        ignore_label: int | None = None,
        on_epoch_start: Callable[[int], None] | None = None,
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> None:
        self.model = model
        self.loss = loss
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.train_batches = train_batches
        self.val_batches = val_batches
        self.settings = settings
        self.device = device
        self.grad_scaler = grad_scaler
        self.run_log = run_log
        self.checkpoints = checkpoints
        self.regions = regions
        self.ignore_label = ignore_label
        self.on_epoch_start = on_epoch_start
        self.memory_format = memory_format

    def _to_device(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        image = batch["image"].to(self.device, non_blocking=True)
        if self.memory_format != torch.contiguous_format:
            image = image.contiguous(memory_format=self.memory_format)
        return image, batch["label"].to(self.device, non_blocking=True)

    def train_step(self, batch: Batch) -> float:
        image, label = self._to_device(batch)
        return optimizer_step(
            lambda: float32_loss(self.loss, self.model(image), label),
            self.model,
            self.optimizer,
            self.grad_scaler,
            device=self.device,
            amp=self.settings.amp,
            grad_clip=self.settings.grad_clip,
        )

    @torch.no_grad()
    def validation_step(self, batch: Batch) -> tuple[float, torch.Tensor]:
        image, label = self._to_device(batch)
        with amp_autocast(self.device, self.settings.amp):
            output = self.model(image)
        loss = float32_loss(self.loss, output, label)
        logits = output[0] if isinstance(output, list | tuple) else output
        return loss.item(), pseudo_dice_counts(logits.float(), label, self.regions, self.ignore_label)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """``iterations_per_epoch`` training steps; the mean loss over processes (``train_loss``)."""
        self.model.train()
        total = 0.0
        with epoch_progress(self.settings.iterations_per_epoch, f"epoch {epoch}", self.run_log is not None) as bar:
            for _, batch in zip(range(self.settings.iterations_per_epoch), self.train_batches(epoch), strict=False):
                loss = self.train_step(batch)
                total += loss
                bar.advance(loss)
        mean = all_reduce_sums([total / self.settings.iterations_per_epoch], self.device)[0] / rank_and_world()[1]
        return {"train_loss": mean}

    def validate_epoch(self, epoch: int) -> dict[str, float | list[float]]:
        """``val_iterations`` validation steps; the mean loss (``val_loss``) and pseudo Dice per class (``dice``)."""
        self.model.eval()
        total, counts = 0.0, None
        for _, batch in zip(range(self.settings.val_iterations), self.val_batches(epoch), strict=False):
            loss, batch_counts = self.validation_step(batch)
            total += loss
            counts = batch_counts if counts is None else counts + batch_counts
        val_loss = all_reduce_sums([total / max(self.settings.val_iterations, 1)], self.device)[0] / rank_and_world()[1]
        counts = all_reduce_sum(counts.to(self.device)).cpu()
        return {"val_loss": val_loss, "dice": dice_from_counts(counts)}

    def fit(self, start_epoch: int = 0) -> int:
        """Train from ``start_epoch`` (0, or the epoch a checkpoint says) to the last epoch the time budget allows.

        Returns:
            The number of epochs done: ``num_epochs``, or fewer where ``time_budget_minutes`` stopped the run.
        """
        budget = self.settings.time_budget_minutes
        return EpochLoop(
            self.train_epoch,
            self.validate_epoch,
            self.optimizer,
            self.settings.num_epochs,
            self.settings.checkpoint_every,
            self.run_log,
            self.checkpoints,
            epoch_scheduler=self.scheduler,
            on_epoch_start=self.on_epoch_start,
            save_best=True,
            time_budget_s=None if budget is None else 60.0 * budget,
        ).run(start_epoch)
