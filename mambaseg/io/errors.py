"""Exceptions raised by the io layer."""

from __future__ import annotations

from pathlib import Path


class ImageReadError(ValueError):
    """A file or folder exists but cannot be read as an image (truncated, corrupt, or unsupported content)."""


class ChannelFilesError(ValueError):
    """A file holds more channels than its role allows: one of a case's several image files, or a label map.

    Attributes:
        path: the offending file.
        reason: what is wrong with it.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason

    def __reduce__(self) -> tuple[type[ChannelFilesError], tuple[Path, str]]:
        return type(self), (self.path, self.reason)  # rebuilt whole when it crosses a process pool
