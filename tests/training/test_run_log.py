"""The run log: metrics.csv, resume without duplicate epochs, progress.png, training.log, progress display."""

import csv
import io
import logging
import math

import pytest
import torch
from matplotlib.image import imread
from omegaconf import OmegaConf
from rich.console import Console

from mambaseg.planning.checkpoint import load_checkpoint, save_checkpoint
from mambaseg.training.run_log import RunLog, epoch_progress, write_run_config
from mambaseg.workspace.layout import RunLogFiles


def _log(run_log: RunLog, epoch: int, dice: tuple[float, float] = (0.5, 0.7), loss: float = 1.0) -> dict:
    return run_log.log_epoch(
        epoch,
        train_loss=loss - epoch * 0.1,
        val_loss=loss - epoch * 0.05,
        dice=dice,
        lr=0.01 * (1 - epoch / 10) ** 0.9,
        epoch_time=10.0 + epoch,
    )


def _rows(path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_csv_and_ema(tmp_path):
    with RunLog(RunLogFiles.in_folder(tmp_path), plot=False) as run_log:
        first = _log(run_log, 0, dice=(0.5, 0.7))
        second = _log(run_log, 1, dice=(0.7, 0.9))
        third = _log(run_log, 2, dice=(0.1, math.nan))
    assert first["mean_dice"] == pytest.approx(0.6) and first["ema_dice"] == pytest.approx(0.6)
    assert second["ema_dice"] == pytest.approx(0.9 * 0.6 + 0.1 * 0.8)
    assert third["mean_dice"] == pytest.approx(0.1)
    assert first["is_best"] and second["is_best"] and not third["is_best"]
    rows = _rows(tmp_path / "metrics.csv")
    assert list(rows[0]) == [
        "epoch",
        "train_loss",
        "val_loss",
        "dice_1",
        "dice_2",
        "mean_dice",
        "ema_dice",
        "lr",
        "epoch_time",
    ]
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert float(rows[1]["ema_dice"]) == pytest.approx(0.62)
    assert float(rows[2]["dice_1"]) == pytest.approx(0.1) and rows[2]["dice_2"] == "nan"
    assert float(rows[2]["epoch_time"]) == 12.0
    assert (tmp_path / "metrics.csv").read_text().count("epoch,") == 1


def test_resume_from_checkpoint_does_not_duplicate_epochs(tmp_path):
    run_log = RunLog(RunLogFiles.in_folder(tmp_path), plot=False)
    for epoch in range(2):
        _log(run_log, epoch)
    model = torch.nn.Linear(2, 2)
    path = save_checkpoint(
        tmp_path / "checkpoint_latest.pth", model=model, epoch=2, extra={"run_log": run_log.state_dict()}
    )
    for epoch in range(2, 4):
        _log(run_log, epoch)
    run_log.close()

    resumed = RunLog(RunLogFiles.in_folder(tmp_path), plot=False)
    checkpoint = load_checkpoint(path)
    resumed.load_state_dict(checkpoint.extra["run_log"])
    for epoch in range(checkpoint.epoch, 5):
        _log(resumed, epoch, loss=2.0)
    resumed.close()
    rows = _rows(tmp_path / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3, 4]
    assert float(rows[1]["train_loss"]) == pytest.approx(0.9)
    assert float(rows[2]["train_loss"]) == pytest.approx(1.8)
    assert resumed.state_dict()["records"][-1]["epoch"] == 4


def test_epochs_must_follow_each_other(tmp_path):
    with RunLog(RunLogFiles.in_folder(tmp_path), plot=False) as run_log:
        _log(run_log, 0)
        with pytest.raises(ValueError, match="epoch 2 logged, but the history ends at epoch 0"):
            _log(run_log, 2)
        with pytest.raises(ValueError, match="3 dice values"):
            _log(run_log, 1, dice=(0.1, 0.2, 0.3))
        _log(run_log, 1)
    assert [int(r["epoch"]) for r in _rows(tmp_path / "metrics.csv")] == [0, 1]


def test_progress_png_and_training_log(tmp_path):
    with RunLog(RunLogFiles.in_folder(tmp_path)) as run_log:
        _log(run_log, 0)
        _log(run_log, 1)
        logging.getLogger("mambaseg.training.trainer").info("a message from the trainer")
    png = tmp_path / "progress.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert imread(png).shape[:2] == (1500, 1000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv", "progress.png", "training.log"]
    text = (tmp_path / "training.log").read_text()
    assert "epoch 1: train loss 0.9000" in text and "a message from the trainer" in text
    assert not logging.getLogger("mambaseg").handlers


def test_epoch_progress_is_silent_off_terminal_or_off_rank0():
    buffer = io.StringIO()
    for console, enabled in ((Console(file=buffer), True), (Console(file=buffer, force_terminal=True), False)):
        with epoch_progress(3, "epoch 0", enabled=enabled, console=console) as bar:
            for loss in (1.0, 2.0, 3.0):
                bar.advance(loss)
        assert bar.mean_loss == 2.0
    assert buffer.getvalue() == ""


def test_epoch_progress_on_terminal_shows_bar():
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=100)
    with epoch_progress(2, "epoch 7", console=console) as bar:
        bar.advance(0.5)
        bar.advance()
    assert "epoch 7" in buffer.getvalue()
    assert bar.mean_loss == 0.5


def _log_pretraining(run_log: RunLog, epoch: int, top1: float, ema_top1: float = math.nan) -> dict:
    return run_log.log_epoch(
        epoch,
        train_loss=2.0 - epoch * 0.5,
        val_loss=1.5 - epoch * 0.25,
        top1=top1,
        top5=min(100.0, 2 * top1),
        ema_top1=ema_top1,
        ema_top5=math.nan if math.isnan(ema_top1) else 100.0,
        lr=1e-3,
        epoch_time=3.0,
    )


def test_pretraining_columns_best_of_model_or_ema_and_plot(tmp_path):
    with RunLog(RunLogFiles.in_folder(tmp_path), best=("top1", "ema_top1"), score_label="accuracy [%]") as run_log:
        assert _log_pretraining(run_log, 0, top1=40.0)["is_best"]
        assert _log_pretraining(run_log, 1, top1=35.0, ema_top1=45.0)["is_best"]
        third = _log_pretraining(run_log, 2, top1=44.0, ema_top1=42.0)
        assert not third["is_best"] and "mean_dice" not in third and run_log.best == 45.0
        logging.getLogger("mambaseg.pretraining.run").info("pretraining message")
    rows = _rows(tmp_path / "metrics.csv")
    fields = ["epoch", "train_loss", "val_loss", "top1", "top5", "ema_top1", "ema_top5", "lr", "epoch_time"]
    assert list(rows[0]) == fields
    assert [float(r["top1"]) for r in rows] == [40.0, 35.0, 44.0] and rows[0]["ema_top1"] == "nan"
    assert imread(tmp_path / "progress.png").shape[:2] == (1500, 1000)
    text = (tmp_path / "training.log").read_text()
    assert "epoch 1: train loss 1.5000, val loss 1.2500, top-1 35.0000" in text and "EMA top-1 45.0000" in text
    assert "pretraining message" in text

    resumed = RunLog(RunLogFiles.in_folder(tmp_path), plot=False, best=("top1", "ema_top1"))
    resumed.load_state_dict({"records": run_log.state_dict()["records"][:2]})
    assert resumed.best == 45.0
    assert not _log_pretraining(resumed, 2, top1=45.0)["is_best"]  # not above the EMA's 45 of epoch 1
    resumed.close()
    assert [float(r["top1"]) for r in _rows(tmp_path / "metrics.csv")] == [40.0, 35.0, 45.0]


def test_every_epoch_logs_the_same_metrics(tmp_path):
    with RunLog(RunLogFiles.in_folder(tmp_path), plot=False) as run_log:
        _log(run_log, 0)
        with pytest.raises(ValueError, match="epoch 1 logs"):
            run_log.log_epoch(1, train_loss=1.0, val_loss=1.0, dice=(0.5, 0.5), lr=0.01)
    assert len(_rows(tmp_path / "metrics.csv")) == 1


def test_run_config_is_written_atomically_as_yaml(tmp_path):
    run_dir = tmp_path / "run"
    config = {"seed": 3, "trainer": {"num_epochs": 2, "lr": 0.01}, "folds": [0, 1]}
    path = write_run_config(run_dir / "config.yaml", config)
    assert path == run_dir / "config.yaml" and OmegaConf.to_container(OmegaConf.load(path)) == config
    write_run_config(run_dir / "config.yaml", {**config, "seed": 4})
    assert OmegaConf.load(path).seed == 4
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml"]  # no temporary file left
