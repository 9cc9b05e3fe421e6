"""Checkpoints: exact resume, atomic writes, weights_only loading and clear errors for bad files."""

import os
import random
import re

import numpy as np
import pytest
import torch
from torch import nn

import mambaseg
from mambaseg.planning.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mambaseg.training.checkpoint import (
    restore_rng_state,
    restore_run,
    restore_training_state,
    resume_checkpoint,
)
from mambaseg.training.optim import build_optimizer, build_scheduler
from mambaseg.training.run_log import RunLog
from mambaseg.workspace.layout import CheckpointFiles, FoldFiles, RunLogFiles

PLANS = {"dataset_name": "Dataset001_Demo", "configurations": {"2d": {"patch_size": [64, 64], "batch_size": 2}}}
CONFIG = {"trainer": {"num_epochs": 5}, "network": "unet_resenc"}


class Unpicklable:
    """A custom class: a checkpoint holding one must be refused by weights_only loading."""


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))


def _parts(seed: int = 0):
    torch.manual_seed(seed)
    model = _model()
    optimizer = build_optimizer("sgd", model, lr=0.1)
    scheduler = build_scheduler("poly", optimizer, 10)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return model, optimizer, scheduler, scaler


def _train_step(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler) -> None:
    """One step drawing data from numpy and Python, dropout masks and noise from torch."""
    x = torch.from_numpy(np.random.randn(4, 6).astype(np.float32)) * random.uniform(0.5, 2.0)
    x = x + 0.1 * torch.randn(4, 6)
    target = torch.from_numpy(np.random.randint(0, 3, size=4))
    loss = nn.functional.cross_entropy(model(x), target)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    scheduler.step()


def _save(path, model, optimizer, scheduler, scaler, epoch=3, **extra):
    return save_checkpoint(
        path,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        grad_scaler=scaler,
        epoch=epoch,
        plans=PLANS,
        config=CONFIG,
        extra=extra or {"best_ema": 0.5},
    )


def test_resume_continues_exactly(tmp_path):
    random.seed(1)
    np.random.seed(1)
    model, optimizer, scheduler, scaler = _parts()
    model.train()
    for _ in range(3):
        _train_step(model, optimizer, scheduler)
    path = _save(tmp_path / "checkpoint_latest.pth", model, optimizer, scheduler, scaler)
    for _ in range(2):
        _train_step(model, optimizer, scheduler)
    expected = {k: v.clone() for k, v in model.state_dict().items()}

    random.seed(99)
    np.random.seed(99)
    fresh, fresh_optimizer, fresh_scheduler, fresh_scaler = _parts(seed=123)
    checkpoint = load_checkpoint(path)
    assert restore_training_state(checkpoint, fresh, fresh_optimizer, fresh_scheduler, fresh_scaler) == 3
    restore_rng_state(checkpoint)
    fresh.train()
    for _ in range(2):
        _train_step(fresh, fresh_optimizer, fresh_scheduler)
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, expected[key]), key
    assert fresh_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]


def test_restore_run_puts_back_weights_states_rngs_and_the_run_log(tmp_path):
    random.seed(1)
    np.random.seed(1)
    model, optimizer, scheduler, scaler = _parts()
    model.train()
    with RunLog(RunLogFiles.in_folder(tmp_path / "first"), plot=False) as run_log:
        for epoch in range(3):
            _train_step(model, optimizer, scheduler)
            run_log.log_epoch(epoch, train_loss=1.0 / (epoch + 1), dice=[0.1 * epoch], lr=scheduler.get_last_lr()[0])
        path = _save(
            CheckpointFiles.in_folder(tmp_path).latest,
            model,
            optimizer,
            scheduler,
            scaler,
            run_log=run_log.state_dict(),
        )
    for _ in range(2):
        _train_step(model, optimizer, scheduler)
    expected = {k: v.clone() for k, v in model.state_dict().items()}

    random.seed(99)
    np.random.seed(99)
    fresh, fresh_optimizer, fresh_scheduler, fresh_scaler = _parts(seed=123)
    with RunLog(RunLogFiles.in_folder(tmp_path / "resumed"), plot=False) as resumed_log:
        start = restore_run(load_checkpoint(path), fresh, fresh_optimizer, fresh_scheduler, fresh_scaler, resumed_log)
        assert start == 3 and resumed_log.records == run_log.records and resumed_log.best == run_log.best
        fresh.train()
        for _ in range(2):
            _train_step(fresh, fresh_optimizer, fresh_scheduler)
        assert resumed_log.log_epoch(3, train_loss=0.2, dice=[0.1], lr=0.01)["ema_dice"] == pytest.approx(
            0.9 * run_log.records[2]["ema_dice"] + 0.1 * 0.1
        )
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, expected[key]), key
    assert fresh_scheduler.last_epoch == scheduler.last_epoch


def test_resume_checkpoint_chooses_latest_before_final_and_refuses_a_finished_run(tmp_path):
    model, optimizer, scheduler, scaler = _parts()
    assert resume_checkpoint(FoldFiles(tmp_path, "0"), continue_training=False) is None  # a fresh run
    with pytest.raises(ValueError, match="has no checkpoint to resume from"):
        resume_checkpoint(FoldFiles(tmp_path, "0"), continue_training=True)
    final = _save(CheckpointFiles.in_folder(tmp_path).final, model, optimizer, scheduler, scaler, epoch=5)
    assert resume_checkpoint(FoldFiles(tmp_path, "0"), continue_training=True) == final
    with pytest.raises(ValueError, match="already holds a finished run; continue it"):
        resume_checkpoint(FoldFiles(tmp_path, "0"), continue_training=False)
    latest = _save(CheckpointFiles.in_folder(tmp_path).latest, model, optimizer, scheduler, scaler, epoch=4)
    assert resume_checkpoint(FoldFiles(tmp_path, "0"), continue_training=True) == latest
    with pytest.raises(ValueError, match=re.escape(str(tmp_path))):
        resume_checkpoint(FoldFiles(tmp_path, "0"), continue_training=False)


def test_checkpoint_contents(tmp_path):
    model, optimizer, scheduler, scaler = _parts()
    wrapped = nn.DataParallel(model)
    path = _save(tmp_path / "ckpt.pth", wrapped, optimizer, scheduler, scaler, run_log={"records": []})
    raw = torch.load(path, weights_only=True)
    assert set(raw["model"]) == set(model.state_dict())
    checkpoint = load_checkpoint(path)
    assert checkpoint.version == mambaseg.__version__
    assert (checkpoint.plans, checkpoint.config, checkpoint.epoch) == (PLANS, CONFIG, 3)
    assert checkpoint.extra == {"run_log": {"records": []}}
    assert {"python", "numpy", "torch"} <= set(checkpoint.rng)


def test_unsafe_payload_is_rejected_at_save(tmp_path):
    model, optimizer, scheduler, scaler = _parts()
    with pytest.raises(TypeError, match="checkpoint.extra.bad"):
        _save(tmp_path / "ckpt.pth", model, optimizer, scheduler, scaler, bad=Unpicklable())
    assert list(tmp_path.iterdir()) == []


def test_crash_while_writing_keeps_previous_file(tmp_path, monkeypatch):
    model, optimizer, scheduler, scaler = _parts()
    path = _save(tmp_path / "checkpoint_latest.pth", model, optimizer, scheduler, scaler, epoch=3)
    before = path.read_bytes()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        _save(path, model, optimizer, scheduler, scaler, epoch=4)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    assert load_checkpoint(path).epoch == 3


def test_truncated_file(tmp_path):
    model, optimizer, scheduler, scaler = _parts()
    path = _save(tmp_path / "ckpt.pth", model, optimizer, scheduler, scaler)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"ckpt\.pth.*not a readable checkpoint"):
        load_checkpoint(path)


@pytest.mark.parametrize("content", [b"hello, not a checkpoint\n", b""])
def test_non_checkpoint_file(tmp_path, content):
    path = tmp_path / "notes.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="notes.pth"):
        load_checkpoint(path)


def test_plain_torch_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(_model().state_dict(), path)
    with pytest.raises(CheckpointError, match="not a mambaseg checkpoint"):
        load_checkpoint(path)


def test_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"x": Unpicklable()}, path)
    with pytest.raises(CheckpointError, match=r"evil\.pth.*refused.*could run code"):
        load_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "absent.pth")


def _rewrite(path, **changes):
    data = torch.load(path, weights_only=True)
    data.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del data[key]
    torch.save(data, path)


def test_other_major_version_and_missing_keys(tmp_path):
    model, optimizer, scheduler, scaler = _parts()
    path = _save(tmp_path / "ckpt.pth", model, optimizer, scheduler, scaler)
    major = int(mambaseg.__version__.split(".")[0])
    _rewrite(path, version=f"{major + 1}.0.0")
    with pytest.raises(CheckpointError, match="major versions differ"):
        load_checkpoint(path)
    _rewrite(path, version=mambaseg.__version__, rng=None)
    with pytest.raises(CheckpointError, match=r"missing entries \['rng'\]"):
        load_checkpoint(path)
