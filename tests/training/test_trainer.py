import shutil

import torch
from torch import nn

from mambaseg.planning.checkpoint import load_checkpoint
from mambaseg.training.checkpoint import restore_rng_state, restore_training_state
from mambaseg.training.loop import EpochLoop
from mambaseg.training.losses import build_training_loss
from mambaseg.training.optim import build_optimizer, build_scheduler
from mambaseg.training.run_log import RunLog
from mambaseg.training.trainer import (
    CheckpointWriter,
    LoopSettings,
    Trainer,
    dice_from_counts,
    pseudo_dice_counts,
)
from mambaseg.workspace.layout import CheckpointFiles, RunLogFiles

LABELS = {"background": 0, "bright": 1, "dark": 2}


def batches(epoch: int, count: int = 10):
    """Deterministic per epoch: label 1 where the image is bright, 2 where it is dark."""
    for i in range(count):
        g = torch.Generator().manual_seed(epoch * 1000 + i)
        image = torch.randn(2, 1, 16, 16, generator=g)
        label = torch.zeros(2, 1, 16, 16, dtype=torch.long)
        label[image > 0.7] = 1
        label[image < -0.7] = 2
        yield {"image": image, "label": label}


def build(run_dir, num_epochs=4, checkpoint_every=2):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 1))
    optimizer = build_optimizer("sgd", model, lr=0.05, momentum=0.9, nesterov=True, weight_decay=3e-5)
    scheduler = build_scheduler("poly", optimizer, total_steps=num_epochs)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    run_log = RunLog(RunLogFiles.in_folder(run_dir), plot=False)
    writer = CheckpointWriter(
        CheckpointFiles.in_folder(run_dir), model, optimizer, scheduler, scaler, run_log, {"name": "toy"}, {"seed": 0}
    )
    settings = LoopSettings(num_epochs, iterations_per_epoch=10, val_iterations=3, checkpoint_every=checkpoint_every)
    loss = build_training_loss(LABELS, ignore_label=None, batch_dice=False, deep_supervision_scales=None)
    trainer = Trainer(
        model,
        loss,
        optimizer,
        scheduler,
        batches,
        lambda e: batches(10_000 + e, 3),
        settings,
        torch.device("cpu"),
        scaler,
        run_log,
        writer,
    )
    return trainer, run_log


def test_pseudo_dice_counts_by_hand():
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 1, 0, :] = 5  # predict class 1 on the top row
    logits[0, 2, 1, 0] = 5  # class 2 bottom-left, background bottom-right
    target = torch.tensor([[[[1, 0], [2, 2]]]])
    counts = pseudo_dice_counts(logits, target)
    assert counts.tolist() == [[1, 1], [1, 0], [0, 1]]  # tp, fp, fn for classes 1 and 2
    assert dice_from_counts(counts) == [2 / 3, 2 / 3]
    ignored = pseudo_dice_counts(logits, target, ignore_label=0)  # the top-right voxel (label 0) drops out
    assert ignored.tolist() == [[1, 1], [0, 0], [0, 1]]


def test_pseudo_dice_counts_for_regions():
    logits = torch.tensor([[[[3.0, -3.0]], [[3.0, 3.0]]]])  # (b=1, regions=2, 1, 2)
    target = torch.tensor([[[[1, 2]]]])
    counts = pseudo_dice_counts(logits, target, regions=[[1, 2], [2]])
    assert counts.tolist() == [[1, 1], [0, 1], [1, 0]]


def test_training_learns_and_writes_checkpoints_and_metrics(tmp_path):
    trainer, run_log = build(tmp_path, num_epochs=6)
    with run_log:
        trainer.fit()
    records = run_log.records
    assert len(records) == 6
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert min(records[-1]["dice"]) > 0.8
    for name in ("checkpoint_best.pt", "checkpoint_latest.pt", "checkpoint_final.pt"):
        assert (tmp_path / name).is_file()
    assert load_checkpoint(tmp_path / "checkpoint_final.pt").epoch == 6
    assert len((tmp_path / "metrics.csv").read_text().strip().splitlines()) == 1 + 6


def test_resuming_from_a_checkpoint_continues_exactly(tmp_path):
    straight_dir, resumed_dir = tmp_path / "straight", tmp_path / "resumed"
    trainer, straight_log = build(straight_dir)
    saved_at_two = tmp_path / "at_epoch_2.pt"
    original_save = trainer.checkpoints.save

    def save_and_keep(name, epoch):
        path = original_save(name, epoch)
        if name == "latest" and epoch == 2:
            shutil.copy(path, saved_at_two)
        return path

    trainer.checkpoints.save = save_and_keep
    with straight_log:
        trainer.fit()
    straight = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    resumed, run_log = build(resumed_dir)
    checkpoint = load_checkpoint(saved_at_two)
    start = restore_training_state(checkpoint, resumed.model, resumed.optimizer, resumed.scheduler, resumed.grad_scaler)
    restore_rng_state(checkpoint)
    run_log.load_state_dict(checkpoint.extra["run_log"])
    assert start == 2
    with run_log:
        resumed.fit(start)
    for name, tensor in resumed.model.state_dict().items():
        assert torch.equal(tensor, straight[name]), name


def test_fit_runs_the_shared_epoch_loop_with_a_per_epoch_schedule_and_best_checkpoints(tmp_path, monkeypatch):
    runs = []
    run = EpochLoop.run

    def spy(loop, start_epoch=0):
        runs.append((start_epoch, loop.epoch_scheduler, loop.save_best))
        run(loop, start_epoch)

    monkeypatch.setattr(EpochLoop, "run", spy)
    trainer, run_log = build(tmp_path, num_epochs=1)
    with run_log:
        trainer.fit()
    assert runs == [(0, trainer.scheduler, True)] and (tmp_path / "checkpoint_best.pt").is_file()
