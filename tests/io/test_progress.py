"""One progress protocol: library functions report their items to whatever Progress they are given."""

import io
from contextlib import contextmanager

import pytest
from rich.console import Console

from mambaseg.data import check_dataset
from mambaseg.io.progress import SILENT, RichProgress, as_progress, console_progress
from mambaseg.planning.fingerprint import extract_fingerprint
from mambaseg.preprocessing.dataset import preprocess_cases
from tests.preprocessing.test_dataset import NAMES, SPEC, dataset  # noqa: F401 (a fixture)


class Recorder:
    """A Progress keeping (description, total, items advanced, whether the task ended) per task."""

    def __init__(self):
        self.tasks = []

    @contextmanager
    def task(self, description, total):
        record = {"description": description, "total": total, "done": 0, "ended": False}
        self.tasks.append(record)

        class Task:
            def advance(self, n=1):
                record["done"] += n

        yield Task()
        record["ended"] = True


@pytest.mark.parametrize("workers", [1, 2])
def test_check_fingerprint_and_preprocess_report_every_case(dataset, tmp_path, workers):  # noqa: F811
    recorder = Recorder()
    check_dataset(dataset, max_workers=workers, progress=recorder)
    extract_fingerprint(dataset, workers=workers, progress=recorder)
    preprocess_cases(dataset, SPEC, tmp_path / "pre", workers=workers, progress=recorder)
    n = len(NAMES)
    assert recorder.tasks == [
        {"description": "checking cases", "total": n, "done": n, "ended": True},
        {"description": "fingerprint", "total": n, "done": n, "ended": True},
        {"description": "preprocessing", "total": n, "done": n, "ended": True},
    ]


def test_rich_bars_draw_each_task_in_turn_and_leave_the_screen_clean():
    out = io.StringIO()
    progress = RichProgress(Console(file=out, force_terminal=True, width=100))
    for description in ("checking cases", "fingerprint"):
        with progress.task(description, total=3) as task:
            task.advance()
            task.advance(2)
    assert "checking cases" in out.getvalue() and "fingerprint" in out.getvalue()
    with progress.task("again", total=1) as task:  # the display restarts after the last task ended
        task.advance()


def test_silent_unless_asked():
    assert as_progress(None) is SILENT
    recorder = Recorder()
    assert as_progress(recorder) is recorder
    assert console_progress(Console(file=io.StringIO())) is SILENT
    assert isinstance(console_progress(Console(file=io.StringIO(), force_terminal=True)), RichProgress)
