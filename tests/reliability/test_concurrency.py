"""Two commands on one target: the second is refused naming the first, and a dead command's lock is no obstacle.

The first command is stood in for by a process holding the target's lock (``mambaseg.io.locks.owned``) as a
running command does; the second runs through the CLI.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mambaseg.cli.main import main
from mambaseg.workspace.layout import file_lock, folder_lock
from tests.data.synthetic import write_nnunet_dataset

HOLDER = """
import sys, time
from pathlib import Path
from mambaseg.io.locks import owned
with owned(Path(sys.argv[1]), "target"):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def holder():
    """Start a process holding a lock file; yields a starter, kills what it started (as a crash would)."""
    started: list[subprocess.Popen] = []

    def start(lock: Path) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock)], stdout=subprocess.PIPE, text=True)
        assert process.stdout.readline().strip() == "held"
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()  # no error where the test killed it already
        process.wait()


def _error(capsys) -> str:
    return " ".join(capsys.readouterr().out.split())


def test_a_second_preprocess_of_a_configuration_is_refused_then_runs_after_a_crash(tmp_path, capsys, holder):
    dataset = write_nnunet_dataset(tmp_path / "Dataset001_Tiny", n_cases=3, shape=(8, 12, 12), spacing=(1, 1, 1))
    ws = tmp_path / "ws"
    assert main(["plan", str(dataset), "--workspace", str(ws)]) == 0
    out = ws / "Synthetic" / "preprocessed" / "3d_fullres"
    first = holder(folder_lock(out))
    capsys.readouterr()
    assert main(["preprocess", str(dataset), "--workspace", str(ws), "-c", "3d_fullres"]) == 1
    assert f"preprocessed folder {out} is in use by another mambaseg command (pid {first.pid} on" in _error(capsys)
    assert not list(out.glob("*.npz"))
    first.kill()  # the first command crashes (SIGKILL): its lock is released with it
    first.wait()
    assert main(["preprocess", str(dataset), "--workspace", str(ws), "-c", "3d_fullres"]) == 0
    assert len(list(out.glob("*.npz"))) == 3


def test_a_second_export_to_one_file_is_refused(tmp_path, capsys, holder):
    target = tmp_path / "model.zip"
    first = holder(file_lock(target))
    capsys.readouterr()
    assert main(["export-model", "Synthetic", str(target), "--workspace", str(tmp_path / "ws")]) == 1
    assert f"export target {target} is in use by another mambaseg command (pid {first.pid} on" in _error(capsys)
    assert not target.exists()


def test_a_second_train_of_one_fold_is_refused_naming_the_first(tmp_path, capsys, holder):
    dataset = write_nnunet_dataset(tmp_path / "Dataset001_Tiny", n_cases=5, shape=(8, 12, 12), spacing=(1, 1, 1))
    ws = tmp_path / "ws"
    fold = ws / "Synthetic" / "runs" / "3d_fullres__unet_resenc" / "fold_0"
    first = holder(folder_lock(fold))
    capsys.readouterr()
    command = ["train", str(dataset), "--workspace", str(ws), "-f", "0", "-n", "unet_resenc", "num_workers=0"]
    assert main(command) == 1
    assert f"fold {fold} is in use by another mambaseg command (pid {first.pid} on" in _error(capsys)
    assert not (fold / "config.yaml").exists()  # nothing of the fold was written
