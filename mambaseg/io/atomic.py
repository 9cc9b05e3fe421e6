"""Writing a file atomically: into a temporary file beside it, then renamed into place."""

from __future__ import annotations

import errno
import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

logger = logging.getLogger(__name__)


def write_atomically(path: Path, write: Callable[[BinaryIO], object], *, durable: bool = False) -> None:
    """Write ``path`` through ``write(handle)`` so that it holds either its old or its new content, never a part.

    ``write`` fills a binary temporary file ``.NAME.*.tmp`` in the same folder, which then replaces ``path`` with
    ``os.replace``; if anything fails or interrupts it, the temporary file is removed and the error re-raised.
    The folder must exist. The file gets the permissions of any new file (0666 less the umask).

    Args:
        path: the file to write.
        write: writes the content into the open binary handle it is given.
        durable: fsync the file before the rename and the folder after it, so the new content survives a power cut.

    Raises:
        FileNotFoundError: the folder of ``path`` does not exist.
    """
    name = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for any new file
    except FileNotFoundError as err:
        if path.parent.is_dir():
            raise
        raise FileNotFoundError(errno.ENOENT, f"no folder {path.parent} to write into", str(path)) from err
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    if durable:
        _fsync_dir(path.parent)


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
