"""The run log of a training fold: ``metrics.csv``, ``progress.png`` and ``training.log`` in the run folder.

Each epoch adds one record: train and validation loss, pseudo Dice per foreground class, its mean and moving
average (EMA, ``ema = 0.9 * ema + 0.1 * mean`` as nnU-Net), the learning rate and the epoch's duration.
Create it on rank 0 only; while it is open, the ``mambaseg`` loggers write INFO and above to ``training.log``.
The history round-trips through checkpoints with ``state_dict``/``load_state_dict``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from mambaseg.io.atomic import write_atomically

logger = logging.getLogger(__name__)

EMA_DECAY = 0.9
FIELDS = ("epoch", "train_loss", "val_loss", "mean_dice", "ema_dice", "lr", "epoch_time")


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


class LogFile:
    """Copies the ``mambaseg`` loggers' records, INFO and above, to ``path`` until ``close()``.

    Args:
        path: the log file, appended to.
    """

    def __init__(self, path: Path) -> None:
        self._handler = logging.FileHandler(path, encoding="utf-8")
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        package_logger = logging.getLogger("mambaseg")
        self._previous_level = package_logger.level
        if package_logger.getEffectiveLevel() > logging.INFO:
            package_logger.setLevel(logging.INFO)
        package_logger.addHandler(self._handler)

    def close(self) -> None:
        """Detach the handler and restore the logger's level."""
        package_logger = logging.getLogger("mambaseg")
        package_logger.removeHandler(self._handler)
        package_logger.setLevel(self._previous_level)
        self._handler.close()


class RunLog:
    """Per-epoch metrics of one run, written to ``metrics.csv``, ``progress.png`` and ``training.log``.

    Args:
        run_dir: the run folder (created if missing).
        plot: redraw ``progress.png`` after every epoch.
    """

    def __init__(self, run_dir: str | os.PathLike, plot: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.plot = plot
        self.records: list[dict[str, Any]] = []
        self.best_ema = -math.inf
        self._csv_in_sync = False
        self._log_file = LogFile(self.run_dir / "training.log")

    @property
    def csv_path(self) -> Path:
        return self.run_dir / "metrics.csv"

    @property
    def png_path(self) -> Path:
        return self.run_dir / "progress.png"

    def log_epoch(
        self,
        epoch: int,
        *,
        train_loss: float,
        val_loss: float,
        dice_per_class: Sequence[float],
        lr: float,
        epoch_time: float,
    ) -> dict[str, Any]:
        """Record an epoch, update the CSV and the plot, and return the record.

        Epochs count from 0 and come in order; logging an epoch already recorded (after resuming from an earlier
        checkpoint) drops it and every later one. The record's ``is_best`` says whether its EMA is the best yet.
        """
        if epoch > len(self.records):
            raise ValueError(
                f"run log {self.run_dir}: epoch {epoch} logged, but the history ends at epoch {len(self.records) - 1} "
                "(when resuming, load_state_dict the run log saved in the checkpoint first)"
            )
        if self.records and len(dice_per_class) != len(self.records[0]["dice"]):
            raise ValueError(
                f"run log {self.run_dir}: epoch {epoch} has {len(dice_per_class)} Dice values, "
                f"earlier epochs {len(self.records[0]['dice'])}"
            )
        if epoch < len(self.records):
            del self.records[epoch:]
            finite = [r["ema_dice"] for r in self.records if not math.isnan(r["ema_dice"])]
            self.best_ema = max(finite, default=-math.inf)
            self._csv_in_sync = False
        mean_dice = _nanmean([float(d) for d in dice_per_class])
        previous = self.records[-1]["ema_dice"] if self.records else math.nan
        if math.isnan(previous):
            ema = mean_dice
        elif math.isnan(mean_dice):
            ema = previous
        else:
            ema = EMA_DECAY * previous + (1 - EMA_DECAY) * mean_dice
        record = {
            "epoch": int(epoch),
            "train_loss": float(train_loss),
            "val_loss": float(val_loss),
            "mean_dice": mean_dice,
            "ema_dice": ema,
            "dice": [float(d) for d in dice_per_class],
            "lr": float(lr),
            "epoch_time": float(epoch_time),
        }
        self.records.append(record)
        is_best = not math.isnan(ema) and ema > self.best_ema
        if is_best:
            self.best_ema = ema
        self._write_csv(record)
        if self.plot:
            self.plot_progress()
        dice_text = ", ".join(f"{d:.4f}" for d in record["dice"])
        logger.info(
            "epoch %d: train loss %.4f, val loss %.4f, pseudo Dice [%s], EMA %.4f%s, lr %.3g, %.1f s",
            epoch,
            train_loss,
            val_loss,
            dice_text,
            ema,
            " (best)" if is_best else "",
            lr,
            epoch_time,
        )
        return {**record, "is_best": is_best}

    def _header(self) -> list[str]:
        classes = len(self.records[0]["dice"]) if self.records else 0
        return [*FIELDS[:3], *(f"dice_{k + 1}" for k in range(classes)), *FIELDS[3:]]

    @staticmethod
    def _row(record: dict[str, Any]) -> list[Any]:
        return [*(record[k] for k in FIELDS[:3]), *record["dice"], *(record[k] for k in FIELDS[3:])]

    def _write_csv(self, record: dict[str, Any]) -> None:
        if self._csv_in_sync:
            with self.csv_path.open("a", newline="", encoding="utf-8") as handle:
                csv.writer(handle).writerow(self._row(record))
            return
        rows = io.StringIO(newline="")
        writer = csv.writer(rows)
        writer.writerow(self._header())
        writer.writerows(self._row(r) for r in self.records)
        write_atomically(self.csv_path, lambda handle: handle.write(rows.getvalue().encode("utf-8")))
        self._csv_in_sync = True

    def plot_progress(self) -> Path:
        """Draw ``progress.png`` as nnU-Net does: losses with pseudo Dice and its EMA, epoch time, learning rate."""
        epochs = [r["epoch"] for r in self.records]
        figure = Figure(figsize=(10, 15), dpi=100)
        FigureCanvasAgg(figure)
        loss_ax, time_ax, lr_ax = figure.subplots(3, 1)
        dice_ax = loss_ax.twinx()
        loss_ax.plot(epochs, [r["train_loss"] for r in self.records], color="b", label="train loss")
        loss_ax.plot(epochs, [r["val_loss"] for r in self.records], color="r", label="val loss")
        dice_ax.plot(epochs, [r["mean_dice"] for r in self.records], color="g", ls="dotted", label="pseudo Dice")
        dice_ax.plot(epochs, [r["ema_dice"] for r in self.records], color="g", label="pseudo Dice (EMA)")
        loss_ax.set_ylabel("loss")
        dice_ax.set_ylabel("pseudo Dice")
        loss_ax.legend(loc="upper left")
        dice_ax.legend(loc="upper right")
        time_ax.plot(epochs, [r["epoch_time"] for r in self.records], color="b", label="epoch duration")
        time_ax.set_ylim(bottom=0)
        time_ax.set_ylabel("time [s]")
        time_ax.legend(loc="upper left")
        lr_ax.plot(epochs, [r["lr"] for r in self.records], color="b", label="learning rate")
        lr_ax.set_ylabel("learning rate")
        lr_ax.legend(loc="upper left")
        for ax in (loss_ax, time_ax, lr_ax):
            ax.set_xlabel("epoch")
        figure.tight_layout()
        write_atomically(self.png_path, lambda handle: figure.savefig(handle, format="png"))
        return self.png_path

    def state_dict(self) -> dict[str, Any]:
        """The history as plain types, for a checkpoint's ``extra``."""
        return {"records": [dict(r, dice=list(r["dice"])) for r in self.records], "best_ema": self.best_ema}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the history; the next write rewrites ``metrics.csv`` from it, dropping epochs logged later."""
        self.records = [dict(r, dice=list(r["dice"])) for r in state["records"]]
        self.best_ema = float(state["best_ema"])
        self._csv_in_sync = False

    def close(self) -> None:
        """Detach the ``training.log`` handler."""
        self._log_file.close()

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EpochProgress:
    """A handle on a running epoch bar; ``advance(loss)`` moves it one iteration and shows the mean loss."""

    def __init__(self, progress: Progress | None, task: int | None) -> None:
        self._progress = progress
        self._task = task
        self._loss_sum = 0.0
        self._count = 0

    def advance(self, loss: float | None = None) -> None:
        """Count one iteration, with its loss if known."""
        if loss is not None:
            self._loss_sum += float(loss)
            self._count += 1
        if self._progress is not None:
            text = f"loss {self._loss_sum / self._count:.4f}" if self._count else ""
            self._progress.update(self._task, advance=1, loss=text)

    @property
    def mean_loss(self) -> float:
        return self._loss_sum / self._count if self._count else math.nan


@contextlib.contextmanager
def epoch_progress(
    total: int, description: str, enabled: bool = True, console: Console | None = None
) -> Iterator[EpochProgress]:
    """A rich progress bar for one epoch; silent when ``enabled`` is false (not rank 0) or not on a terminal."""
    console = console or Console(stderr=True)
    if not (enabled and console.is_terminal):
        yield EpochProgress(None, None)
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[loss]}"),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        yield EpochProgress(progress, progress.add_task(description, total=total, loss=""))
