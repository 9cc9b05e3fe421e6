"""The files a training or pretraining run writes, as the workspace layer hands them over.

Training never composes a file name: it is given objects with these properties (the workspace layout's
``FoldFiles`` and ``PretrainingFiles`` have them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class CheckpointPaths(Protocol):
    """The checkpoints of a run: ``latest`` (periodic), ``best`` (best score so far), ``final``."""

    @property
    def latest(self) -> Path: ...

    @property
    def best(self) -> Path: ...

    @property
    def final(self) -> Path: ...


class LogPaths(Protocol):
    """The per-epoch metrics table, its plot, and the text log of a run."""

    @property
    def metrics(self) -> Path: ...

    @property
    def plot(self) -> Path: ...

    @property
    def log(self) -> Path: ...


class RunPaths(Protocol):
    """A run folder: its resolved config, checkpoints and logs."""

    @property
    def folder(self) -> Path: ...

    @property
    def config(self) -> Path: ...

    @property
    def checkpoints(self) -> CheckpointPaths: ...

    @property
    def logs(self) -> LogPaths: ...
