"""kill -9 in the middle of training and of batch prediction: the rerun finishes as if nothing had happened.

Each run is a separate ``python -m mambaseg`` process, killed with SIGKILL (no handler, no cleanup can run).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mambaseg.cli.main import main
from mambaseg.io import read_image
from mambaseg.planning.checkpoint import load_checkpoint
from tests.data.synthetic import file_states, write_nnunet_dataset
from tests.reliability.helpers import read_only, temp_files

REPO = Path(__file__).resolve().parents[2]
TRAIN = ["-c", "3d_fullres", "-n", "unet_resenc", "-f", "0", "--deterministic", "trainer=cpu_short"]
TRAIN += ["trainer.num_epochs=3", "trainer.iterations_per_epoch=2", "trainer.val_iterations=1"]
TRAIN += ["trainer.checkpoint_every=1", "num_workers=0", "--workers", "1"]
RUN = Path("Synthetic", "runs", "3d_fullres__unet_resenc")
N_TEST = 4


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _start(*args: str, code: str | None = None) -> subprocess.Popen:
    command = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "mambaseg", *args]
    return subprocess.Popen(command, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _kill_when(process: subprocess.Popen, appeared: Path, timeout: float = 300) -> None:
    """SIGKILL ``process`` as soon as ``appeared`` exists; fail if the process ends first."""
    deadline = time.monotonic() + timeout
    while not appeared.exists():
        if process.poll() is not None:
            pytest.fail(f"ended before {appeared.name} appeared:\n{process.stdout.read().decode()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{appeared} did not appear within {timeout} s")
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL


def _finish(process: subprocess.Popen) -> None:
    output = process.communicate(timeout=600)[0].decode()
    assert process.returncode == 0, output


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw") / "Dataset001_Tiny"
    return write_nnunet_dataset(root, n_cases=5, n_test=N_TEST, shape=(8, 12, 12), spacing=(1, 1, 1))


@pytest.mark.slow
def test_training_killed_after_a_checkpoint_resumes_to_the_same_weights(dataset, tmp_path):
    before = file_states(dataset)
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    process = _start("train", str(dataset), "--workspace", str(killed), *TRAIN)
    _kill_when(process, killed / RUN / "fold_0" / "checkpoint_latest.pt")
    assert not (killed / RUN / "fold_0" / "checkpoint_final.pt").exists()
    assert load_checkpoint(killed / RUN / "fold_0" / "checkpoint_latest.pt").epoch in (1, 2)
    _finish(_start("train", str(dataset), "--workspace", str(killed), *TRAIN, "--continue"))
    _finish(_start("train", str(dataset), "--workspace", str(straight), *TRAIN))
    resumed = load_checkpoint(killed / RUN / "fold_0" / "checkpoint_final.pt")
    expected = load_checkpoint(straight / RUN / "fold_0" / "checkpoint_final.pt")
    assert resumed.epoch == expected.epoch == 3
    assert resumed.model.keys() == expected.model.keys()
    for name, tensor in expected.model.items():
        assert torch.equal(resumed.model[name], tensor), name
    assert file_states(dataset) == before


# Predicts normally but stops for good inside the write of the third mask (its temporary file complete, not yet
# renamed), after leaving a marker, so that the kill lands at the worst moment.
_STALL_IN_THIRD_WRITE = """
import sys, time
from pathlib import Path
from mambaseg.io import files
from mambaseg.cli.main import main
marker, written, real_write = Path(sys.argv[1]), [], files.write_nifti
def stalling_write(image, path):
    real_write(image, path)
    written.append(path)
    if len(written) == 3:
        marker.touch()
        time.sleep(600)
files.write_nifti = stalling_write
sys.exit(main(sys.argv[2:]))
"""


@pytest.fixture(scope="module")
def trained_run(dataset, tmp_path_factory) -> Path:
    workspace = tmp_path_factory.mktemp("ws")
    one_epoch = [arg for arg in TRAIN if arg != "--deterministic"] + ["trainer.num_epochs=1"]
    assert main(["train", str(dataset), "--workspace", str(workspace), *one_epoch]) == 0
    return workspace / RUN


@pytest.mark.slow
def test_prediction_killed_while_writing_leaves_no_partial_file_and_the_rerun_completes(dataset, trained_run, tmp_path):
    images, out, marker = dataset / "imagesTs", tmp_path / "masks", tmp_path / "stalled"
    before = file_states(images)
    predict = ["predict", "-i", str(images), "-o", str(out), "-m", str(trained_run), "--device", "cpu"]
    _kill_when(_start(str(marker), *predict, code=_STALL_IN_THIRD_WRITE), marker)
    done = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert done == ["case_005.nii.gz", "case_006.nii.gz"]  # the third is not visible: only its temporary file
    for name in done:
        assert read_image(out / name).array.shape == (8, 12, 12)
    assert [Path(name).parts[0].split(".")[1] for name in temp_files(out)] == ["case_007"]  # killed mid-write
    finished = {name: state for name, state in file_states(out).items() if name in done}
    _finish(_start(*predict))
    names = [f"case_{5 + i:03d}.nii.gz" for i in range(N_TEST)]
    assert sorted(p.name for p in out.iterdir()) == names  # nothing else: no temporary file left
    assert temp_files(out) == []
    for name in names:
        mask = read_image(out / name)
        assert mask.array.shape == (8, 12, 12) and set(np.unique(mask.array)) <= {0, 1}
    assert {name: file_states(out)[name] for name in done} == finished  # finished cases are not predicted again
    assert file_states(images) == before


@pytest.mark.slow
def test_prediction_into_a_read_only_folder_fails_clearly_and_writes_nothing(dataset, trained_run, tmp_path, capsys):
    images, out = dataset / "imagesTs", tmp_path / "masks"
    out.mkdir()
    before = file_states(images)
    with read_only(out):
        status = main(["predict", "-i", str(images), "-o", str(out), "-m", str(trained_run), "--device", "cpu"])
    assert status == 1
    message = " ".join(capsys.readouterr().out.split())
    assert "error:" in message and str(out) in message and "not writable" in message  # before any case is predicted
    assert list(out.iterdir()) == []
    assert file_states(images) == before
