"""The run log: ``metrics.csv``, ``progress.png`` and ``training.log`` in the run folder, and its ``config.yaml``.

Each epoch adds one record of named metrics, in the order given: numbers, and lists of numbers that take one CSV
column each (``dice`` gives ``dice_1``, ``dice_2``, ...). Segmentation logs losses, the pseudo Dice per foreground
class (``dice``), to which the log adds its mean and moving average (``ema_dice = 0.9 * ema + 0.1 * mean`` as
nnU-Net), the learning rate and the epoch's duration; pretraining logs losses, top-1 and top-5 accuracy of the
model and of its EMA weights, the learning rate and the duration. The best epoch is the one with the highest of
the ``best`` metrics. Create it on rank 0 only; while it is open, the ``mambaseg`` loggers write INFO and above to
``training.log``. The history round-trips through checkpoints with ``state_dict``/``load_state_dict``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from omegaconf import OmegaConf
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from mambaseg.io.atomic import write_atomically
from mambaseg.training.files import LogPaths

logger = logging.getLogger(__name__)

EMA_DECAY = 0.9
NOT_SCORES = ("epoch", "lr", "epoch_time")
LOSS_COLORS = ("b", "r", "c", "k")
SCORE_COLORS = ("g", "m", "y", "tab:orange")
NAMES = {
    "dice": "pseudo Dice per class",
    "mean_dice": "pseudo Dice",
    "ema_dice": "pseudo Dice (EMA)",
    "top1": "top-1",
    "top5": "top-5",
    "ema_top1": "EMA top-1",
    "ema_top5": "EMA top-5",
    "epoch_time": "time",
}


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _name(column: str) -> str:
    return NAMES.get(column, column.replace("_", " "))


def _copy(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, list) else v for k, v in record.items()}


def write_run_config(path: Path, config: Mapping[str, Any]) -> Path:
    """Write the resolved ``config`` as YAML to ``path`` (its folder created if missing), atomically.

    Returns:
        The path written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    text = OmegaConf.to_yaml(OmegaConf.create(dict(config)))
    write_atomically(path, lambda handle: handle.write(text.encode("utf-8")))
    return path


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
    """Per-epoch metrics of one run, written to its metrics table (CSV), its plot (PNG) and its text log.

    Args:
        files: where the table, plot and log go (their folder is created if missing).
        plot: redraw the plot after every epoch.
        best: the metrics whose highest value (NaN aside) makes an epoch the best yet.
        score_label: the axis label of the metrics plotted beside the losses.
    """

    def __init__(
        self,
        files: LogPaths,
        plot: bool = True,
        best: Sequence[str] = ("ema_dice",),
        score_label: str = "pseudo Dice",
    ) -> None:
        self.files = files
        self.run_dir = files.metrics.parent
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.plot = plot
        self.best_metrics = tuple(best)
        self.score_label = score_label
        self.records: list[dict[str, Any]] = []
        self.best = -math.inf
        self._csv_in_sync = False
        self._log_file = LogFile(files.log)

    @property
    def csv_path(self) -> Path:
        return self.files.metrics

    @property
    def png_path(self) -> Path:
        return self.files.plot

    def log_epoch(self, epoch: int, **metrics: float | Sequence[float]) -> dict[str, Any]:
        """Record an epoch, update the CSV and the plot, and return the record.

        Epochs count from 0 and come in order; logging an epoch already recorded (after resuming from an earlier
        checkpoint) drops it and every later one. Every epoch logs the same metrics. The record's ``is_best``
        says whether its best metric is the highest yet.

        Args:
            epoch: the epoch.
            **metrics: numbers and lists of numbers by name, e.g. ``train_loss``, ``dice``, ``top1``, ``lr``,
                ``epoch_time``; a ``dice`` list adds ``mean_dice`` and ``ema_dice`` after it.
        """
        if epoch > len(self.records):
            raise ValueError(
                f"run log {self.run_dir}: epoch {epoch} logged, but the history ends at epoch {len(self.records) - 1} "
                "(when resuming, load_state_dict the run log saved in the checkpoint first)"
            )
        record: dict[str, Any] = {"epoch": int(epoch)}
        for key, value in metrics.items():
            record[key] = [float(v) for v in value] if isinstance(value, Sequence) else float(value)
            if key == "dice":
                record["mean_dice"] = _nanmean(record["dice"])
                record["ema_dice"] = self._moving_average(epoch, record["mean_dice"])
        if epoch > 0:
            self._check_columns(record)
        if epoch < len(self.records):
            del self.records[epoch:]
            self.best = max((self._best_of(r) for r in self.records), default=-math.inf)
            self._csv_in_sync = False
        self.records.append(record)
        best = self._best_of(record)
        is_best = best > self.best
        if is_best:
            self.best = best
        self._write_csv(record)
        if self.plot:
            self.plot_progress()
        logger.info("epoch %d: %s%s", epoch, self._describe(record), " (best)" if is_best else "")
        return {**record, "is_best": is_best}

    def _moving_average(self, epoch: int, mean: float) -> float:
        previous = self.records[epoch - 1]["ema_dice"] if epoch > 0 else math.nan
        if math.isnan(previous):
            return mean
        if math.isnan(mean):
            return previous
        return EMA_DECAY * previous + (1 - EMA_DECAY) * mean

    def _check_columns(self, record: dict[str, Any]) -> None:
        first = self.records[0]
        if list(record) != list(first):
            raise ValueError(
                f"run log {self.run_dir}: epoch {record['epoch']} logs {list(record)[1:]}, "
                f"earlier epochs {list(first)[1:]}"
            )
        for key, value in record.items():
            if isinstance(value, list) and len(value) != len(first[key]):
                raise ValueError(
                    f"run log {self.run_dir}: epoch {record['epoch']} has {len(value)} {key} values, "
                    f"earlier epochs {len(first[key])}"
                )

    def _best_of(self, record: Mapping[str, Any]) -> float:
        """The record's highest ``best`` metric; -inf without one."""
        values = [record[k] for k in self.best_metrics if k in record and not math.isnan(record[k])]
        return max(values, default=-math.inf)

    @staticmethod
    def _describe(record: Mapping[str, Any]) -> str:
        parts = []
        for key, value in record.items():
            if key == "epoch":
                continue
            if isinstance(value, list):
                text = "[" + ", ".join(f"{v:.4f}" for v in value) + "]"
            elif key == "lr":
                text = f"{value:.3g}"
            elif key == "epoch_time":
                text = f"{value:.1f} s"
            else:
                text = f"{value:.4f}"
            parts.append(f"{_name(key)} {text}")
        return ", ".join(parts)

    def _header(self) -> list[str]:
        first = self.records[0] if self.records else {}
        return [
            column
            for key, value in first.items()
            for column in ([f"{key}_{k + 1}" for k in range(len(value))] if isinstance(value, list) else [key])
        ]

    @staticmethod
    def _row(record: Mapping[str, Any]) -> list[Any]:
        return [v for value in record.values() for v in (value if isinstance(value, list) else [value])]

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

    def _series(self, key: str) -> list[float]:
        return [r[key] for r in self.records]

    def plot_progress(self) -> Path:
        """Draw ``progress.png`` as nnU-Net does: losses with the scores beside them, epoch time, learning rate.

        Columns ending in ``loss`` are losses; every other number but ``lr`` and ``epoch_time`` is a score, drawn
        solid for a moving average (``ema_``) and dotted otherwise, one colour per score and its average.
        """
        epochs = self._series("epoch")
        columns = [k for k, v in self.records[0].items() if not isinstance(v, list)] if self.records else []
        losses = [k for k in columns if k.endswith("loss")]
        scores = [k for k in columns if k not in losses and k not in NOT_SCORES]
        scores = [k for k in scores if not all(math.isnan(v) for v in self._series(k))]
        families = list(dict.fromkeys(k.removeprefix("ema_").removeprefix("mean_") for k in scores))
        figure = Figure(figsize=(10, 15), dpi=100)
        FigureCanvasAgg(figure)
        loss_ax, time_ax, lr_ax = figure.subplots(3, 1)
        score_ax = loss_ax.twinx()
        for key, color in zip(losses, LOSS_COLORS, strict=False):
            loss_ax.plot(epochs, self._series(key), color=color, label=_name(key))
        for key in scores:
            family = families.index(key.removeprefix("ema_").removeprefix("mean_"))
            style = "solid" if key.startswith("ema_") else "dotted"
            color = SCORE_COLORS[family % len(SCORE_COLORS)]
            score_ax.plot(epochs, self._series(key), color=color, ls=style, label=_name(key))
        loss_ax.set_ylabel("loss")
        score_ax.set_ylabel(self.score_label)
        loss_ax.legend(loc="upper left")
        if scores:
            score_ax.legend(loc="upper right")
        for ax, key, label in ((time_ax, "epoch_time", "time [s]"), (lr_ax, "lr", "learning rate")):
            if key in columns:
                ax.plot(epochs, self._series(key), color="b", label="epoch duration" if key == "epoch_time" else label)
                ax.legend(loc="upper left")
            ax.set_ylabel(label)
        time_ax.set_ylim(bottom=0)
        for ax in (loss_ax, time_ax, lr_ax):
            ax.set_xlabel("epoch")
        figure.tight_layout()
        write_atomically(self.png_path, lambda handle: figure.savefig(handle, format="png"))
        return self.png_path

    def state_dict(self) -> dict[str, Any]:
        """The history as plain types, for a checkpoint's ``extra``."""
        return {"records": [_copy(r) for r in self.records]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the history; the next write rewrites ``metrics.csv`` from it, dropping epochs logged later."""
        self.records = [_copy(r) for r in state["records"]]
        self.best = max((self._best_of(r) for r in self.records), default=-math.inf)
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
