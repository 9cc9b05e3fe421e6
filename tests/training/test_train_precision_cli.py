"""`mambaseg train` records the precision it trained in (config.yaml, training.log, the checkpoint's run record) and
validates the fold in it."""

import json

import pytest
import yaml

from mambaseg.cli.main import main
from mambaseg.planning.checkpoint import load_checkpoint
from tests.data.synthetic import write_nnunet_dataset

TINY = [
    "-c",
    "3d_fullres",
    "-n",
    "unet_resenc",
    "-f",
    "0",
    "trainer=cpu_short",
    "trainer.num_epochs=1",
    "trainer.iterations_per_epoch=2",
    "trainer.val_iterations=1",
    "num_workers=0",
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("native_bf16", "amp", "autocast", "memory_format", "logged"),
    [
        (
            True,
            "true",
            "bfloat16",
            "channels_last_3d",
            "training precision: bfloat16 autocast, memory format channels_last_3d on cpu (trainer.amp=True)",
        ),
        (True, "false", None, "contiguous", "training precision: float32, memory format contiguous on cpu"),
        (False, "true", None, "contiguous", "training precision: float32, memory format contiguous on cpu"),
    ],
)
def test_the_run_records_the_precision_it_trained_in(
    tmp_path, monkeypatch, native_bf16, amp, autocast, memory_format, logged
):
    monkeypatch.setattr("mambaseg.nn.precision.cpu_has_native_bf16", lambda: native_bf16)
    dataset = write_nnunet_dataset(tmp_path / "Dataset001_Tiny", n_cases=5, shape=(8, 12, 12), spacing=(1, 1, 1))
    workspace = tmp_path / "ws"
    assert main(["train", str(dataset), "--workspace", str(workspace), *TINY, f"trainer.amp={amp}"]) == 0
    run = workspace / "Synthetic" / "runs" / "3d_fullres__unet_resenc" / "fold_0"
    expected = {"autocast": autocast, "memory_format": memory_format, "device": "cpu"}
    assert yaml.safe_load((run / "config.yaml").read_text())["precision"] == expected
    assert logged in (run / "training.log").read_text()
    checkpoint = load_checkpoint(run / "checkpoint_final.pt")
    assert checkpoint.extra["run"]["precision"] == expected
    assert checkpoint.epoch == 1
    # the fold's final validation predicts in the precision the run trained in (as predict's default)
    times = json.loads((run / "validation" / "prediction_times.json").read_text())
    assert times["precision"] == (autocast or "float32")
