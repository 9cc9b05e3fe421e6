"""The log of a pretraining run: ``metrics.csv``, ``progress.png`` and ``training.log`` in the run folder.

Each epoch adds one record: training loss (soft-target cross entropy), validation loss, top-1 and top-5
accuracy in percent (and of the EMA weights, NaN without them), the learning rate and the epoch's duration.
Create it on rank 0 only; while it is open, the ``mambaseg`` loggers write INFO and above to ``training.log``.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from pathlib import Path
from typing import Any, BinaryIO

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mambaseg.io.atomic import write_atomically
from mambaseg.training.run_log import LogFile

logger = logging.getLogger(__name__)

FIELDS = ("epoch", "train_loss", "val_loss", "top1", "top5", "ema_top1", "ema_top5", "lr", "epoch_time")


class PretrainLog:
    """Per-epoch metrics of a pretraining run.

    Args:
        run_dir: the run folder (created if missing).
        plot: redraw ``progress.png`` after every epoch.
    """

    def __init__(self, run_dir: str | os.PathLike, plot: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.plot = plot
        self.records: list[dict[str, float]] = []
        self._log_file = LogFile(self.run_dir / "training.log")

    @property
    def best_top1(self) -> float:
        """The best top-1 so far, of the model or its EMA (-inf before any epoch)."""
        values = [v for r in self.records for v in (r["top1"], r["ema_top1"]) if not math.isnan(v)]
        return max(values, default=-math.inf)

    def log_epoch(self, epoch: int, **metrics: float) -> dict[str, float]:
        """Record epoch ``epoch`` (dropping any record from it on), rewrite the CSV and the plot, return the record.

        Args:
            epoch: the epoch, counting from 0.
            **metrics: every field of ``FIELDS`` but ``epoch``.
        """
        if epoch > len(self.records):
            raise ValueError(
                f"pretraining log {self.run_dir}: epoch {epoch} logged after epoch {len(self.records) - 1}"
            )
        del self.records[epoch:]
        record = {"epoch": epoch, **{k: float(metrics[k]) for k in FIELDS[1:]}}
        self.records.append(record)
        write_atomically(self.run_dir / "metrics.csv", self._write_csv)
        if self.plot:
            write_atomically(self.run_dir / "progress.png", self._draw)
        logger.info(
            "epoch %d: train loss %.4f, val loss %.4f, top-1 %.2f%%, top-5 %.2f%%, EMA top-1 %.2f%%, lr %.3g, %.1f s",
            epoch,
            record["train_loss"],
            record["val_loss"],
            record["top1"],
            record["top5"],
            record["ema_top1"],
            record["lr"],
            record["epoch_time"],
        )
        return record

    def _write_csv(self, handle: BinaryIO) -> None:
        rows = io.StringIO(newline="")
        writer = csv.writer(rows)
        writer.writerow(FIELDS)
        writer.writerows([r[k] for k in FIELDS] for r in self.records)
        handle.write(rows.getvalue().encode("utf-8"))

    def _draw(self, handle: BinaryIO) -> None:
        epochs = [r["epoch"] for r in self.records]
        figure = Figure(figsize=(10, 12), dpi=100)
        FigureCanvasAgg(figure)
        loss_ax, acc_ax, lr_ax = figure.subplots(3, 1)
        loss_ax.plot(epochs, [r["train_loss"] for r in self.records], color="b", label="train loss")
        loss_ax.plot(epochs, [r["val_loss"] for r in self.records], color="r", label="val loss")
        loss_ax.set_ylabel("loss")
        for key, style in (("top1", "g-"), ("top5", "g:"), ("ema_top1", "m-"), ("ema_top5", "m:")):
            values = [r[key] for r in self.records]
            if not all(math.isnan(v) for v in values):
                acc_ax.plot(epochs, values, style, label=key.replace("_", " "))
        acc_ax.set_ylabel("accuracy [%]")
        lr_ax.plot(epochs, [r["lr"] for r in self.records], color="b", label="learning rate")
        lr_ax.set_ylabel("learning rate")
        for ax in (loss_ax, acc_ax, lr_ax):
            ax.set_xlabel("epoch")
            ax.legend(loc="best")
        figure.tight_layout()
        figure.savefig(handle, format="png")

    def state_dict(self) -> dict[str, Any]:
        """The history as plain types, for a checkpoint's ``extra``."""
        return {"records": [dict(r) for r in self.records]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the history saved by ``state_dict``."""
        self.records = [dict(r) for r in state["records"]]

    def close(self) -> None:
        """Detach the ``training.log`` handler."""
        self._log_file.close()
