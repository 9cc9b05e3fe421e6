"""The epoch loop's time budget with toy parts and a fake clock: the run's length, the schedule, the final
checkpoint, the decision replayed on resume, every process following rank 0; and the config key through the CLI."""

import csv
import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from mambaseg.cli.main import main
from mambaseg.planning.checkpoint import load_checkpoint
from mambaseg.training.loop import EpochLoop, epochs_within
from mambaseg.training.optim import PolyLR
from tests.data.synthetic import write_nnunet_dataset
from tests.processes import GLOO_TIMEOUT, leave_group, run_workers
from tests.training.toy_loop import toy_log_and_writer


class Clock:
    """A fake clock that only the toy's training moves, by ``durations[epoch]`` seconds."""

    def __init__(self, durations):
        self.now = 1000.0
        self.durations = durations

    def __call__(self):
        return self.now


class Toy:
    """A task whose epochs take ``durations`` seconds on a fake clock, with nnU-Net's poly schedule."""

    def __init__(self, run_dir, durations, main=True):
        self.clock = Clock(durations)
        self.trained = []
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.optimizer = torch.optim.SGD([self.weight], lr=0.1)
        self.scheduler = PolyLR(self.optimizer, total_steps=10, exponent=0.9)
        self.run_log, self.writer = toy_log_and_writer(run_dir, self.optimizer, self.scheduler, main)

    def train(self, epoch):
        self.trained.append(epoch)
        self.optimizer.step()  # no gradients: changes nothing
        self.clock.now += self.clock.durations[epoch]
        return {"train_loss": 1.0}

    def validate(self, epoch):
        return {"score": float(epoch)}

    def loop(self, budget_s, num_epochs=10, checkpoint_every=2):
        return EpochLoop(
            self.train,
            self.validate,
            self.optimizer,
            num_epochs,
            checkpoint_every,
            self.run_log,
            self.writer,
            epoch_scheduler=self.scheduler,
            time_budget_s=budget_s,
            clock=self.clock,
        )


def table(run_dir):
    return list(csv.DictReader((run_dir / "metrics.csv").open()))


def test_epochs_within_the_budget():
    assert epochs_within(100.0, 30.0, 10) == 3
    assert epochs_within(100.0, 10.0, 10) == 10
    assert epochs_within(1000.0, 10.0, 10) == 10  # never more than planned
    assert epochs_within(100.0, 150.0, 10) == 1  # the epoch that ran counts


def test_the_first_epoch_sets_the_runs_length_and_the_schedule_ends_with_it(tmp_path):
    toy = Toy(tmp_path, [30.0] * 10)
    with toy.run_log:
        done = toy.loop(budget_s=100.0).run()
    assert done == 3 and toy.trained == [0, 1, 2]
    rows = table(tmp_path)
    assert sum(float(r["epoch_time"]) for r in rows) == 90.0  # within the 100 s
    # poly over 3 epochs, not 10: the decay reaches its end
    assert [float(r["lr"]) for r in rows] == pytest.approx([0.1, 0.1 * (2 / 3) ** 0.9, 0.1 * (1 / 3) ** 0.9])
    assert toy.optimizer.param_groups[0]["lr"] == 0.0
    final = load_checkpoint(tmp_path / "checkpoint_final.pt")
    assert final.epoch == 3 and final.scheduler["total_steps"] == 3
    assert final.extra["time_budget"] == {"budget_s": 100.0, "num_epochs": 10, "planned_epochs": 3, "stopped_at": None}
    log = (tmp_path / "training.log").read_text()
    assert "the first epoch took 30.0 s, so 3 of 10 epochs fit" in log
    assert "stopped after 3 of 10 epochs (the first epoch's pace fit 3); the epochs took 90.0 s of the 100.0 s" in log


def test_epochs_that_slow_down_stop_the_run_before_it_overruns(tmp_path):
    toy = Toy(tmp_path, [20.0, 40.0, 40.0, 40.0, 40.0])
    with toy.run_log:
        done = toy.loop(budget_s=100.0, num_epochs=5).run()
    # 5 epochs of 20 s were planned; after 20 + 40 + 40 s the next would end at 133 s at the mean pace
    assert done == 3 and toy.trained == [0, 1, 2]
    final = load_checkpoint(tmp_path / "checkpoint_final.pt")
    assert final.epoch == 3
    assert final.extra["time_budget"] == {"budget_s": 100.0, "num_epochs": 5, "planned_epochs": 5, "stopped_at": 3}
    assert (
        "stopped after 3 of 5 epochs (epochs slowed down: epoch 3 would have ended past the budget)"
        in (tmp_path / "training.log").read_text()
    )
    latest = load_checkpoint(tmp_path / "checkpoint_latest.pt")
    assert latest.epoch == 3  # written where it stopped: resuming replays the stop from the recorded durations
    resumed = Toy(tmp_path, [1.0] * 5)
    with resumed.run_log:
        resumed.run_log.load_state_dict(latest.extra["run_log"])
        resumed.scheduler.load_state_dict(latest.scheduler)
        assert resumed.loop(budget_s=100.0, num_epochs=5).run(latest.epoch) == 3
    assert resumed.trained == [] and load_checkpoint(tmp_path / "checkpoint_final.pt").epoch == 3


def test_a_budget_that_fits_every_epoch_changes_nothing(tmp_path):
    toy = Toy(tmp_path, [10.0] * 4)
    with toy.run_log:
        assert toy.loop(budget_s=100.0, num_epochs=4).run() == 4
    assert toy.scheduler.total_steps == 4 and toy.trained == [0, 1, 2, 3]
    assert "stopped after" not in (tmp_path / "training.log").read_text()


def test_resuming_replays_the_decision_instead_of_timing_again(tmp_path):
    straight_dir, resumed_dir = tmp_path / "straight", tmp_path / "resumed"
    straight = Toy(straight_dir, [20.0] * 10)
    with straight.run_log:
        assert straight.loop(budget_s=100.0).run() == 5
    interrupted = Toy(resumed_dir, [20.0] * 10)

    def crash_at_epoch_2(epoch):
        if epoch == 2:
            raise RuntimeError("interrupted")
        return Toy.train(interrupted, epoch)

    interrupted.train = crash_at_epoch_2
    with interrupted.run_log, pytest.raises(RuntimeError, match="interrupted"):
        interrupted.loop(budget_s=100.0).run()
    checkpoint = load_checkpoint(resumed_dir / "checkpoint_latest.pt")
    assert checkpoint.epoch == 2 and checkpoint.extra["time_budget"]["planned_epochs"] == 5
    resumed = Toy(resumed_dir, [1.0] * 10)  # a faster machine now: timing again would plan all 10 epochs
    with resumed.run_log:
        resumed.run_log.load_state_dict(checkpoint.extra["run_log"])
        resumed.optimizer.load_state_dict(checkpoint.optimizer)
        resumed.scheduler.load_state_dict(checkpoint.scheduler)
        assert resumed.loop(budget_s=100.0).run(checkpoint.epoch) == 5
    assert resumed.trained == [2, 3, 4]
    assert [r["lr"] for r in table(resumed_dir)] == [r["lr"] for r in table(straight_dir)]
    final = load_checkpoint(resumed_dir / "checkpoint_final.pt")
    assert final.epoch == 5 and final.extra["time_budget"]["planned_epochs"] == 5


def test_a_budget_needs_a_schedule_it_can_fit(tmp_path):
    toy = Toy(tmp_path, [1.0])
    with pytest.raises(ValueError, match="total_steps"):
        EpochLoop(toy.train, toy.validate, toy.optimizer, 3, 1, epoch_scheduler=None, time_budget_s=10.0)
    with pytest.raises(ValueError, match="time_budget_s must be > 0"):
        EpochLoop(toy.train, toy.validate, toy.optimizer, 3, 1, epoch_scheduler=toy.scheduler, time_budget_s=0.0)


def _worker(rank: int, store: str, result: str, run_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2, timeout=GLOO_TIMEOUT)
    toy = None
    try:
        # rank 0's epochs take 30 s, rank 1's 1 s: rank 0's timing decides for both
        toy = Toy(Path(run_dir), [30.0] * 10 if rank == 0 else [1.0] * 10, main=rank == 0)
        done = toy.loop(budget_s=100.0).run()
        with open(f"{result}.{rank}", "w") as handle:
            json.dump({"done": done, "trained": toy.trained, "total_steps": toy.scheduler.total_steps}, handle)
    finally:
        if toy is not None and toy.run_log is not None:
            toy.run_log.close()
        leave_group()


@pytest.mark.slow
def test_every_process_follows_rank_0s_decision(tmp_path):
    result = str(tmp_path / "result")
    run_workers(_worker, (str(tmp_path / "store"), result, str(tmp_path / "run")))
    for rank in range(2):
        with open(f"{result}.{rank}") as handle:
            assert json.load(handle) == {"done": 3, "trained": [0, 1, 2], "total_steps": 3}
    assert load_checkpoint(tmp_path / "run" / "checkpoint_final.pt").epoch == 3


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_nnunet_dataset(
        tmp_path_factory.mktemp("raw") / "Dataset001_Tiny", n_cases=5, shape=(8, 12, 12), spacing=(1, 1, 1)
    )


def train(dataset, workspace, *extra):
    args = ["train", str(dataset), "--workspace", str(workspace), "-c", "3d_fullres", "-n", "unet_resenc", "-f", "0"]
    short = ["trainer=cpu_short", "trainer.num_epochs=2", "trainer.iterations_per_epoch=2", "trainer.val_iterations=1"]
    return main([*args, *short, "num_workers=0", *extra])


@pytest.mark.slow
def test_train_takes_the_budget_from_the_config_and_records_it(dataset, tmp_path, capsys):
    assert train(dataset, tmp_path / "bad", "trainer.time_budget_minutes=0") != 0
    assert "trainer.time_budget_minutes=0: must be between 0.01 and 1000000" in capsys.readouterr().out
    # a budget of a week fits both epochs whatever the machine: the run is the planned one, the decision recorded
    assert train(dataset, tmp_path, "trainer.time_budget_minutes=10080") == 0
    run = tmp_path / "Synthetic" / "runs" / "3d_fullres__unet_resenc" / "fold_0"
    final = load_checkpoint(run / "checkpoint_final.pt")
    assert final.epoch == 2 and final.config["trainer"]["time_budget_minutes"] == 10080
    assert final.extra["time_budget"] == {
        "budget_s": 604800.0,
        "num_epochs": 2,
        "planned_epochs": 2,
        "stopped_at": None,
    }
    assert "so 2 of 2 epochs fit" in (run / "training.log").read_text()


@pytest.mark.slow
def test_the_demo_prints_the_epochs_the_budget_and_the_training_wall_time(dataset, tmp_path, capsys):
    tiny = ["trainer.num_epochs=2", "trainer.iterations_per_epoch=2", "trainer.val_iterations=1"]
    argv = ["demo", "--workspace", str(tmp_path), "--dataset", str(dataset), "--network", "unet_resenc", *tiny]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "training: 2 of 2 epochs, time budget 5 min; train stage wall time " in out  # trainer=demo's budget
    assert "Dice per structure" in out
    assert main(argv) == 0  # a second run reuses the trained fold
    assert "training: 2 of 2 epochs, time budget 5 min; trained by an earlier run" in capsys.readouterr().out
