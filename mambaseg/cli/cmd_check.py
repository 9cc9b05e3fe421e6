"""Check a dataset folder: every listed file, its geometry and its labels; all problems are reported at once."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from mambaseg.cli.main import add_workspace_argument
from mambaseg.data import CheckReport, DatasetError, check_dataset, load_dataset

RAW_FOLDER = "raw"
_STYLES = {"error": "bold red", "warning": "yellow"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dataset", help=f"dataset folder (nnU-Net v2 or Decathlon layout), or its name under WORKSPACE/{RAW_FOLDER}"
    )
    add_workspace_argument(parser)
    parser.add_argument(
        "--workers", type=int, default=None, help="processes reading cases (default: one per CPU; 1: no extra process)"
    )


def run(args: argparse.Namespace) -> int:
    console = Console()
    try:
        dataset = load_dataset(dataset_folder(args.dataset, args.workspace))
    except DatasetError as error:
        console.print(Text(f"error: {error}", style=_STYLES["error"]), soft_wrap=True)
        return 1
    report = check_dataset(dataset, max_workers=args.workers, progress=console.is_terminal)
    show_report(console, report, f"{dataset.name} ({dataset.layout} layout)")
    return 0 if report.ok else 1


def dataset_folder(value: str, workspace: Path) -> Path:
    """``value`` where it exists, else the folder of that name under ``workspace/raw`` where that exists."""
    path = Path(value).expanduser()
    candidate = workspace / RAW_FOLDER / value
    return candidate if not path.exists() and candidate.is_dir() else path


def show_report(console: Console, report: CheckReport, title: str) -> None:
    """A table of the problems (files relative to the dataset folder) and a summary line."""
    if report.problems:
        table = Table(title=title, title_justify="left")
        table.add_column("severity")
        table.add_column("file", overflow="fold")
        table.add_column("problem", overflow="fold")
        for problem in report.problems:
            table.add_row(
                Text(problem.severity, style=_STYLES[problem.severity]),
                Text(report.display_path(problem.file)),
                Text(problem.message),
            )
        console.print(table)
    summary = f"{report.n_cases} cases, {len(report.errors)} errors, {len(report.warnings)} warnings: {report.root}"
    console.print(Text(summary, style="bold red" if report.errors else "bold green"), soft_wrap=True)
