"""Running a long command in a child process: its output to a log file, its peak memory measured, never orphaned."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _die_with_parent() -> None:
    """In the child, before exec: end with SIGTERM when the parent process dies (Linux's PR_SET_PDEATHSIG)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def run_logged(
    command: list[str], log_file: Path, env: dict[str, str] | None = None, append: bool = True
) -> tuple[int, float | None]:
    """Run ``command`` with its output and errors to ``log_file``; (exit status, peak resident memory in MB).

    The child ends when this process dies (Linux), or is killed when waiting for it is interrupted, so that no
    training goes on behind a killed or interrupted command. The peak memory is the child's own (``os.wait4``),
    None where the platform cannot tell.

    Raises:
        OSError: the command cannot start.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    linux = sys.platform.startswith("linux")
    with log_file.open("ab" if append else "wb") as output:
        process = subprocess.Popen(
            command, env=env, stdout=output, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent if linux else None
        )
        try:
            if not hasattr(os, "wait4"):
                return process.wait(), None
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:
            process.kill()
            process.wait()
            raise
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux
