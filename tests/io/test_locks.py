"""``owned``: a second command is refused naming the first; a lock whose holder died is taken."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mambaseg.io.locks import LockedError, owned

HOLDER = """
import sys, time
from pathlib import Path
from mambaseg.io.locks import owned
with owned(Path(sys.argv[1]), "the run"):
    print("held", flush=True)
    time.sleep(60)
"""


def _hold(lock_file: Path) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock_file)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_owner_is_refused_naming_the_first_and_a_dead_owner_frees_it(tmp_path):
    lock_file = tmp_path / "run" / ".lock"
    holder = _hold(lock_file)
    try:
        with pytest.raises(LockedError, match=rf"the run is in use by another mambaseg command \(pid {holder.pid} on "):
            with owned(lock_file, "the run"):
                pass
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # a crash: the system releases its lock
        holder.wait()
    assert lock_file.exists()  # left behind, and no obstacle
    with owned(lock_file, "the run"):
        assert f'"pid": {os.getpid()}' in lock_file.read_text()
    assert lock_file.read_text() == ""


def test_the_lock_is_released_when_the_block_fails(tmp_path):
    lock_file = tmp_path / ".lock"
    with pytest.raises(RuntimeError, match="boom"):
        with owned(lock_file, "x"):
            raise RuntimeError("boom")
    started = time.perf_counter()
    with owned(lock_file, "x"):
        pass
    assert time.perf_counter() - started < 1
