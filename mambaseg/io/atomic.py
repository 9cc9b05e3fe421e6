"""Writing files atomically: into a temporary folder beside the target, then renamed into place.

Every file mambaseg writes goes through ``atomic_path`` (for writers that want a path, as nibabel and SimpleITK
do) or ``write_atomically`` (for writers that take an open binary handle, built on ``atomic_path``). A reader
sees the old content or the new, never a part; a failed or interrupted write leaves the old file and no
temporary one. New files get the permissions of any new file: 0666 less the umask (0644 under umask 022).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

logger = logging.getLogger(__name__)


@contextmanager
def atomic_path(path: Path, *, durable: bool = False) -> Iterator[Path]:
    """A temporary path to write ``path`` at; when the block ends without error, the file replaces ``path``.

    The temporary path lies in a fresh folder ``.NAME.PID.*.tmp`` beside ``path``. Every file written in that
    folder replaces its namesake beside ``path``, ``path`` itself last (so the ``.raw`` of an ``.mhd`` is in
    place before the header that names it); then the folder is removed, also when the block fails. Folders
    left by writers that were killed (their process is gone) are removed first. The folder of ``path`` must
    exist.

    Args:
        path: the file to write.
        durable: fsync the files before the rename and the folder after it, so the new content survives a
            power cut.

    Raises:
        FileNotFoundError: the folder of ``path`` does not exist.
        OSError: writing failed; one that named no file (a full disk, a file-size limit) is raised again naming
            ``path``.
    """
    path = Path(path)
    _remove_stale_staging(path)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
    except FileNotFoundError as err:
        if path.parent.is_dir():
            raise
        raise FileNotFoundError(errno.ENOENT, f"no folder {path.parent} to write into", str(path)) from err
    try:
        yield staging / path.name
        written = sorted(staging.iterdir(), key=lambda p: p.name == path.name)
        if durable:
            for file in written:
                _fsync_file(file)
        for file in written:
            os.replace(file, path.parent / file.name)
    except OSError as err:
        if err.filename is not None or not err.errno:
            raise
        # a full disk or a file-size limit surfaces from a write() as "[Errno 27] File too large", naming no file
        raise OSError(err.errno, f"cannot write {path}: {err.strerror}", str(path)) from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if durable:
        _fsync_dir(path.parent)


def write_atomically(path: Path, write: Callable[[BinaryIO], object], *, durable: bool = False) -> None:
    """Write ``path`` through ``write(handle)`` so that it holds either its old or its new content, never a part.

    ``write`` fills a binary temporary file from ``atomic_path``, which then replaces ``path``; if anything
    fails or interrupts it, the temporary is removed and the error re-raised. The folder must exist.

    Args:
        path: the file to write.
        write: writes the content into the open binary handle it is given.
        durable: fsync the file before the rename and the folder after it, so the new content survives a power cut.

    Raises:
        FileNotFoundError: the folder of ``path`` does not exist.
    """
    with atomic_path(path, durable=durable) as staged, open(staged, "xb") as handle:
        write(handle)


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` as UTF-8 to ``path`` with ``write_atomically``; the folder must exist."""
    data = text.encode("utf-8")
    write_atomically(path, lambda handle: handle.write(data))


def _remove_stale_staging(path: Path) -> None:
    """Delete the temporary folders for ``path`` of writers killed mid-write (``.NAME.PID.*.tmp``, PID gone)."""
    prefix = f".{path.name}."
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return  # a missing folder is reported by the write itself
    for entry in entries:
        if not (entry.name.startswith(prefix) and entry.name.endswith(".tmp")):
            continue
        pid = entry.name[len(prefix) :].split(".", 1)[0]
        if pid.isdigit() and not _process_exists(int(pid)):
            shutil.rmtree(entry.path, ignore_errors=True)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        logger.debug("cannot fsync folder %s", folder)
    finally:
        os.close(fd)
