"""Running a command in a child process: its status, its output, its own peak memory."""

import sys

from mambaseg.workspace.processes import run_logged


def test_run_logged_reports_the_exit_status_and_the_childs_own_peak_memory(tmp_path):
    log_file = tmp_path / "child.log"
    allocate = "import sys, time; block = bytearray(200 * 1024 * 1024); print('done'); time.sleep(0.3); sys.exit(3)"
    ballast = bytearray(600 * 1024 * 1024)  # this process grows: the child's peak must not include it
    code, peak_mb = run_logged([sys.executable, "-c", allocate], log_file)
    del ballast
    assert code == 3 and log_file.read_text().strip() == "done"
    if sys.platform.startswith("linux"):
        assert 200 <= peak_mb < 400  # the child's 200 MB and its interpreter, not this test process's memory
    code, _ = run_logged([sys.executable, "-c", "print('again')"], log_file)
    assert code == 0 and log_file.read_text().split() == ["done", "again"]  # appended
