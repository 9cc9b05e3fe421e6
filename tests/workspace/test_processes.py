"""Running a command in a child process: its status, its output, its own peak memory."""

import os
import sys

from mambaseg.workspace.processes import run_logged


def test_run_logged_reports_the_exit_status_and_the_childs_own_peak_memory(tmp_path):
    log_file = tmp_path / "child.log"
    allocate = "import sys; block = bytearray(200 * 1024 * 1024); print('done'); sys.exit(3)"
    code, peak_mb = run_logged([sys.executable, "-c", allocate], log_file)
    assert code == 3 and log_file.read_text().strip() == "done"
    if hasattr(os, "wait4"):
        assert 200 <= peak_mb < 1000  # the child's 200 MB, not this test process's memory
    code, _ = run_logged([sys.executable, "-c", "print('again')"], log_file)
    assert code == 0 and log_file.read_text().split() == ["done", "again"]  # appended
