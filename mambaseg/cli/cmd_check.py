"""Check a dataset folder: every listed file, its geometry and its labels; all problems are reported at once."""

from __future__ import annotations

import argparse

from rich.console import Console

from mambaseg.cli.display import show_error, show_report
from mambaseg.cli.main import add_dataset_argument, add_workspace_argument
from mambaseg.data import DatasetError
from mambaseg.io.progress import console_progress
from mambaseg.workspace import check
from mambaseg.workspace.preparation import open_dataset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataset_argument(parser)
    add_workspace_argument(parser)
    parser.add_argument(
        "--workers", type=int, default=None, help="processes reading cases (default: one per CPU; 1: no extra process)"
    )


def run(args: argparse.Namespace) -> int:
    console = Console()
    try:
        dataset = open_dataset(args.dataset, args.workspace)
    except DatasetError as error:
        return show_error(console, error)
    report = check(dataset, args.workspace, args.workers, progress=console_progress(console))
    show_report(console, dataset, report)
    return 0 if report.ok else 1
