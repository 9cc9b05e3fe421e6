"""One progress protocol for every long-running library function: checking, fingerprinting, preprocessing.

A function that works through many items takes ``progress: Progress | None = None`` and reports through it::

    with as_progress(progress).task("preprocessing", total=len(cases)) as task:
        for case in cases:
            ...
            task.advance()

The library never decides how progress is shown: ``SilentProgress`` (the default) shows nothing,
``RichProgress`` draws bars on a rich console (what the CLI passes on a terminal), and a test or another
front end may pass any object with the same ``task`` method.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress as Bars
    from rich.progress import TaskID


class ProgressTask(Protocol):
    """One task in progress: a counter of finished items."""

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more items as finished."""


@runtime_checkable
class Progress(Protocol):
    """Where long-running functions report their progress."""

    def task(self, description: str, total: int) -> AbstractContextManager[ProgressTask]:
        """A task of ``total`` items, shown while the ``with`` block runs."""


class _SilentTask:
    def advance(self, n: int = 1) -> None:
        """Nothing to show."""


class SilentProgress:
    """Progress that shows nothing: the default of every library function."""

    def task(self, description: str, total: int) -> AbstractContextManager[ProgressTask]:
        """A task that counts nothing."""
        return nullcontext(_SilentTask())


SILENT = SilentProgress()


class _RichTask:
    def __init__(self, bars: Bars, task_id: TaskID) -> None:
        self._bars = bars
        self._task_id = task_id

    def advance(self, n: int = 1) -> None:
        """Move the bar ``n`` items on."""
        self._bars.advance(self._task_id, n)


class RichProgress:
    """A bar per running task on a rich console (description, bar, done/total, time left).

    The display starts with the first task and stops, leaving nothing on the screen, when the last one ends,
    so one ``RichProgress`` can be handed to several functions in turn.

    Args:
        console: where to draw; None for rich's default console (standard output).
    """

    def __init__(self, console: Console | None = None) -> None:
        from rich import progress as rich_progress

        columns = (
            rich_progress.TextColumn("{task.description}"),
            rich_progress.BarColumn(),
            rich_progress.MofNCompleteColumn(),
            rich_progress.TimeRemainingColumn(),
        )
        self._bars = rich_progress.Progress(*columns, console=console, transient=True)
        self._running = 0

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[ProgressTask]:
        """A bar of ``total`` items, removed when the block ends."""
        if not self._running:
            self._bars.start()
        self._running += 1
        task_id = self._bars.add_task(description, total=total)
        try:
            yield _RichTask(self._bars, task_id)
        finally:
            self._bars.remove_task(task_id)
            self._running -= 1
            if not self._running:
                self._bars.stop()


def console_progress(console: Console) -> Progress:
    """Bars on ``console`` when it is a terminal, else silence (no bars in logs or pipes)."""
    return RichProgress(console) if console.is_terminal else SILENT


def as_progress(progress: Progress | None) -> Progress:
    """``progress`` itself, or silence for None."""
    return SILENT if progress is None else progress
