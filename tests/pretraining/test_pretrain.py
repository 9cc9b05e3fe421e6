"""`mambaseg pretrain` end to end on a tiny image folder: run folder, checkpoints, exact resume, errors."""

import csv

import pytest
import torch

from mambaseg.cli.main import main
from mambaseg.planning.checkpoint import load_checkpoint
from mambaseg.pretraining.models import build_classifier
from mambaseg.pretraining.run import Pretraining
from mambaseg.training.loop import EpochLoop
from tests.pretraining.folders import write_image_folder

SHORT = [
    "model.tiny=true",
    "epochs=1",
    "batch_size=8",  # 18 training images: 2 iterations an epoch
    "num_workers=0",
    "data.image_size=16",
    "optimizer.warmup_epochs=0",
    "optimizer.base_lr=0.5",
    "ema.decay=0.5",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("images") / "tiny")


def pretrain(folder, workspace, *extra, network="vmamba_tiny"):
    return main(["pretrain", str(folder), "--workspace", str(workspace), "-n", network, *SHORT, *extra])


def run_dir(workspace, network="vmamba_tiny"):
    return workspace / "pretraining" / f"tiny__{network}"


def test_two_iterations_write_a_complete_run_folder(folder, tmp_path):
    assert pretrain(folder, tmp_path) == 0
    run = run_dir(tmp_path)
    for name in ("checkpoint_final.pt", "checkpoint_latest.pt", "encoder.pt", "config.yaml", "metrics.csv"):
        assert (run / name).is_file(), name
    assert (run / "progress.png").stat().st_size > 0 and "top-1" in (run / "training.log").read_text()
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert len(rows) == 1 and 0 <= float(rows[0]["top1"]) <= float(rows[0]["top5"]) == 100.0  # 3 classes
    checkpoint = load_checkpoint(run / "checkpoint_final.pt")
    assert checkpoint.epoch == 1 and checkpoint.config["batch_size"] == 8
    assert checkpoint.scheduler["last_epoch"] == 2  # the schedule steps once per iteration
    model = build_classifier("vmamba_tiny", 3, 3, tiny=True)
    model.load_state_dict(checkpoint.model)  # round trip into a fresh classifier
    assert set(checkpoint.extra["ema"]) == set(checkpoint.model) and checkpoint.extra["classes"] == [
        "class0",
        "class1",
        "class2",
    ]
    payload = torch.load(run / "encoder.pt", weights_only=True)
    assert payload["config"]["network"] == "vmamba_tiny" and payload["config"]["encoder"]["dims"] == 4
    for key, value in payload["encoder"].items():
        assert torch.equal(value, checkpoint.model[key]), key
    assert pretrain(folder, tmp_path) == 1  # a finished run is not overwritten


def test_resume_continues_exactly(folder, tmp_path, monkeypatch):
    runs = []
    run = EpochLoop.run

    def spy(loop, start_epoch=0):  # the shared loop runs the epochs, the schedule steps per iteration
        runs.append((start_epoch, loop.epoch_scheduler, loop.save_best))
        run(loop, start_epoch)

    monkeypatch.setattr(EpochLoop, "run", spy)
    settings = ["epochs=3", "checkpoint_every=1"]
    assert pretrain(folder, tmp_path / "straight", *settings) == 0

    original = Pretraining.train_epoch

    def crash_at_epoch_2(self, parts, epoch):
        if epoch == 2:
            raise RuntimeError("interrupted")
        return original(self, parts, epoch)

    monkeypatch.setattr(Pretraining, "train_epoch", crash_at_epoch_2)
    assert pretrain(folder, tmp_path / "resumed", *settings) == 1  # the command reports the crash in one line
    monkeypatch.setattr(Pretraining, "train_epoch", original)
    assert load_checkpoint(run_dir(tmp_path / "resumed") / "checkpoint_latest.pt").epoch == 2
    assert pretrain(folder, tmp_path / "resumed", "--continue", *settings, "num_workers=1") == 0

    straight = load_checkpoint(run_dir(tmp_path / "straight") / "checkpoint_final.pt")
    resumed = load_checkpoint(run_dir(tmp_path / "resumed") / "checkpoint_final.pt")
    for key in straight.model:
        assert torch.equal(straight.model[key], resumed.model[key]), key
        assert torch.equal(straight.extra["ema"][key], resumed.extra["ema"][key]), key
    assert straight.extra["run_log"]["records"][2]["train_loss"] == resumed.extra["run_log"]["records"][2]["train_loss"]
    assert len(resumed.extra["run_log"]["records"]) == 3
    assert runs == [(0, None, False), (0, None, False), (2, None, False)]
    assert not (run_dir(tmp_path / "resumed") / "checkpoint_best.pt").exists()


def test_greyscale_pretraining_of_a_network_encoder(tmp_path):
    images = write_image_folder(tmp_path / "tiny", per_class=3, val_per_class=1, mode="L")
    assert pretrain(images, tmp_path, "model.in_channels=1", "batch_size=4", "ema.enabled=false", network="vmunet") == 0
    payload = torch.load(run_dir(tmp_path, "vmunet") / "encoder.pt", weights_only=True)
    assert payload["encoder"]["patch_embed.proj.weight"].shape[1] == 1 and payload["config"]["in_channels"] == 1


def test_user_errors_return_1(folder, tmp_path):
    assert pretrain(folder, tmp_path, "--continue") == 1  # nothing to resume
    assert pretrain(tmp_path / "nowhere", tmp_path) == 1  # no train/ folder
    assert pretrain(folder, tmp_path, "batch_size=100") == 1  # more than the images
    assert pretrain(folder, tmp_path, network="unet_resenc") == 1
