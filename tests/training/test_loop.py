"""The shared epoch loop with toy parts: the order of its calls, its checkpoints, resuming, other processes."""

import csv

import pytest
import torch

from mambaseg.planning.checkpoint import load_checkpoint
from mambaseg.training.loop import EpochLoop
from tests.training.toy_loop import toy_log_and_writer

SCORES = [0.1, 0.5, 0.3, 0.7, 0.2]  # best after epochs 0, 1 and 3


class Toy:
    """A task's parts that record every call into ``calls``; ``iteration_steps`` steps the schedule in training."""

    def __init__(self, run_dir, iteration_steps=0, main=True):
        self.calls = []
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.optimizer = torch.optim.SGD([self.weight], lr=0.1)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.factor)
        self.calls.clear()  # the scheduler computed its first factor
        self.iteration_steps = iteration_steps
        self.run_log, self.writer = toy_log_and_writer(run_dir, self.optimizer, self.scheduler, main)
        if main:
            save = self.writer.save
            self.writer.save = lambda kind, epoch: (self.calls.append(("save", kind, epoch)), save(kind, epoch))[1]

    def factor(self, step):
        self.calls.append(("schedule",))
        return 0.5**step

    def train(self, epoch):
        self.calls.append(("train", epoch))
        self.optimizer.step()  # no gradients: changes nothing
        for _ in range(self.iteration_steps):
            self.scheduler.step()
        return {"train_loss": 1.0 / (epoch + 1)}

    def validate(self, epoch):
        self.calls.append(("validate", epoch))
        return {"val_loss": 2.0 / (epoch + 1), "score": SCORES[epoch]}

    def loop(self, num_epochs=5, checkpoint_every=2, per_epoch=True, save_best=True):
        return EpochLoop(
            self.train,
            self.validate,
            self.optimizer,
            num_epochs,
            checkpoint_every,
            self.run_log,
            self.writer,
            epoch_scheduler=self.scheduler if per_epoch else None,
            on_epoch_start=lambda epoch: self.calls.append(("hook", epoch)),
            save_best=save_best,
        )


def rows(run_dir):
    return list(csv.reader((run_dir / "metrics.csv").open()))


def test_each_epoch_hooks_trains_validates_steps_then_logs_and_checkpoints(tmp_path):
    toy = Toy(tmp_path)
    with toy.run_log:
        toy.loop().run()
    epoch = [("hook",), ("train",), ("validate",), ("schedule",)]
    expected = []
    for e in range(5):
        expected += [(call[0], e) if call[0] != "schedule" else call for call in epoch]
        expected += [("save", "best", e + 1)] if e in (0, 1, 3) else []
        expected += [("save", "latest", e + 1)] if (e + 1) % 2 == 0 else []
    assert toy.calls == [*expected, ("save", "final", 5)]
    table = rows(tmp_path)
    assert table[0] == ["epoch", "train_loss", "val_loss", "score", "lr", "epoch_time"]
    assert [float(r[4]) for r in table[1:]] == pytest.approx([0.1 * 0.5**e for e in range(5)])  # read before stepping
    kept = {kind: load_checkpoint(tmp_path / f"checkpoint_{kind}.pt").epoch for kind in ("best", "latest", "final")}
    assert kept == {"best": 4, "latest": 4, "final": 5}


def test_a_schedule_stepped_per_iteration_and_no_best_checkpoint(tmp_path):
    toy = Toy(tmp_path, iteration_steps=3)
    with toy.run_log:
        toy.loop(num_epochs=3, checkpoint_every=1, per_epoch=False, save_best=False).run()
    saves = [("save", "latest", 1), ("save", "latest", 2), ("save", "latest", 3), ("save", "final", 3)]
    assert [c for c in toy.calls if c[0] == "save"] == saves
    assert toy.scheduler.last_epoch == 3 * 3
    assert load_checkpoint(tmp_path / "checkpoint_final.pt").scheduler["last_epoch"] == 3 * 3
    assert not (tmp_path / "checkpoint_best.pt").exists()


def test_resuming_runs_the_remaining_epochs_and_logs_the_same_records(tmp_path):
    straight_dir, resumed_dir = tmp_path / "straight", tmp_path / "resumed"
    straight = Toy(straight_dir)
    with straight.run_log:
        straight.loop(num_epochs=4).run()
    interrupted = Toy(resumed_dir)

    def crash_at_epoch_2(epoch):
        if epoch == 2:
            raise RuntimeError("interrupted")
        return Toy.train(interrupted, epoch)

    interrupted.train = crash_at_epoch_2
    with interrupted.run_log, pytest.raises(RuntimeError, match="interrupted"):
        interrupted.loop(num_epochs=4).run()
    assert not (resumed_dir / "checkpoint_final.pt").exists()
    checkpoint = load_checkpoint(resumed_dir / "checkpoint_latest.pt")
    resumed = Toy(resumed_dir)
    with resumed.run_log:
        resumed.run_log.load_state_dict(checkpoint.extra["run_log"])
        resumed.optimizer.load_state_dict(checkpoint.optimizer)
        resumed.scheduler.load_state_dict(checkpoint.scheduler)
        resumed.loop(num_epochs=4).run(checkpoint.epoch)
    assert checkpoint.epoch == 2 and [c for c in resumed.calls if c[0] == "hook"] == [("hook", 2), ("hook", 3)]
    assert [r[:5] for r in rows(resumed_dir)] == [r[:5] for r in rows(straight_dir)]
    assert load_checkpoint(resumed_dir / "checkpoint_final.pt").epoch == 4


def test_other_processes_run_every_epoch_and_write_nothing(tmp_path):
    toy = Toy(tmp_path, main=False)
    toy.loop(num_epochs=3).run()
    assert [c for c in toy.calls if c[0] == "train"] == [("train", e) for e in range(3)]
    assert toy.scheduler.last_epoch == 3 and list(tmp_path.iterdir()) == []
