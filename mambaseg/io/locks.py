"""One owner at a time: an exclusive lock on a folder or file that a command writes, naming who holds it.

A command that writes a run, a preprocessed configuration or an export target takes ``owned(lock_file, what)``
first. The lock is an ``flock`` on ``lock_file``, which the system releases when its holder ends in any way (a
crash, ``kill -9``, a lost session), so a lock left behind by a dead process is never in the way: the next command
takes it. While it is held the file records the owner (pid, host, command, start time), and a second command is
refused with a ``LockedError`` naming them. Where ``fcntl`` is missing (Windows) nothing is locked.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)


class LockedError(ValueError):
    """The folder or file is owned by another running command; the message names it."""


def _owner() -> dict[str, object]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join(os.path.basename(arg) if i == 0 else arg for i, arg in enumerate(sys.argv))[:300],
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _describe(lock_file: Path) -> str:
    try:
        owner = json.loads(lock_file.read_text())
        return f"pid {owner['pid']} on {owner['host']}, started {owner['started']}: {owner['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (its record is unreadable)"


@contextlib.contextmanager
def owned(lock_file: Path, what: str, wait: bool = False) -> Iterator[None]:
    """Hold the lock of ``lock_file`` while the block runs.

    Args:
        lock_file: the lock's file (created with its folder where missing; left in place afterwards, unlocked).
        what: what is being written, for the message (e.g. the run folder).
        wait: wait for another holder to finish (saying so in the log) instead of refusing.

    Raises:
        LockedError: another running command holds it (and ``wait`` is off); naming ``what`` and that command.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no flock
        yield
        return
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            if wait:
                logger.info("%s is in use by another mambaseg command (%s); waiting", what, _describe(lock_file))
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            else:
                raise LockedError(
                    f"{what} is in use by another mambaseg command ({_describe(lock_file)}); wait for it to end, or "
                    "stop it, before running this one"
                ) from err
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps(_owner()))
            handle.flush()
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
