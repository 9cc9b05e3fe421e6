"""Running a long command in a child process: its output to a log file, its peak memory measured, never orphaned."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

SAMPLE_SECONDS = 0.05
"""How often the child's high-water mark is read while it runs."""


def _die_with_parent() -> None:
    """In the child, before exec: end with SIGTERM when the parent process dies (Linux's PR_SET_PDEATHSIG)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class _HighWater:
    """The child's own peak resident memory, read from its ``/proc/PID/status`` (``VmHWM``) while it runs.

    ``os.wait4``'s ``ru_maxrss`` cannot serve: Linux carries the parent's high-water mark into a forked child
    across ``exec``, so a child started by a large process reports at least that process's size. ``VmHWM`` belongs
    to the child's own address space, made new at ``exec``, and only grows: the last reading before the child ends
    is its peak, less at most what it allocated in its last ``SAMPLE_SECONDS``.
    """

    def __init__(self, pid: int) -> None:
        self.status = Path(f"/proc/{pid}/status")
        self.kib = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for line in self.status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.kib = max(self.kib, int(line.split()[1]))
        except (OSError, ValueError, IndexError):  # the child ended, or is a zombie without memory lines
            pass

    def _sample(self) -> None:
        while not self._done.is_set():
            self._read()
            self._done.wait(SAMPLE_SECONDS)

    def stop(self) -> float | None:
        """Stop reading; the peak in MB, None when nothing could be read."""
        self._done.set()
        self._thread.join()
        return self.kib / 1024 if self.kib else None


def run_logged(
    command: list[str], log_file: Path, env: dict[str, str] | None = None, append: bool = True
) -> tuple[int, float | None]:
    """Run ``command`` with its output and errors to ``log_file``; (exit status, peak resident memory in MB).

    The child ends when this process dies (Linux), or is killed when waiting for it is interrupted, so that no
    training goes on behind a killed or interrupted command. The peak memory is the child's own (``_HighWater``,
    from ``/proc``), None where the platform cannot tell.

    Raises:
        OSError: the command cannot start.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    linux = sys.platform.startswith("linux")
    with log_file.open("ab" if append else "wb") as output:
        process = subprocess.Popen(
            command, env=env, stdout=output, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent if linux else None
        )
        high_water = _HighWater(process.pid) if linux else None
        try:
            returncode = process.wait()
        except BaseException:
            process.kill()
            process.wait()
            raise
        finally:
            peak = high_water.stop() if high_water is not None else None
    return returncode, peak
