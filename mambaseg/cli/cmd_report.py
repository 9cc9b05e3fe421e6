"""Draw the self-contained HTML reports again: every fold's of a run, a fold's, or a dataset's after find-best.

``mambaseg report RUN_FOLDER`` writes ``fold_K/report.html`` for each trained fold of the run (training writes it
when a fold's validation ends), ``mambaseg report FOLD_FOLDER`` that fold's, and ``mambaseg report DATASET
[--workspace W]`` the dataset's ``W/DATASET/report.html`` of what find-best chose (find-best writes it too). What
the pages show: ``docs/run_report.md``.
"""

from __future__ import annotations

import argparse

from rich.console import Console

from mambaseg.cli.display import show_error
from mambaseg.cli.main import add_workspace_argument
from mambaseg.workspace.reports import report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target",
        metavar="RUN_OR_DATASET",
        help="a run folder (WORKSPACE/DATASET/runs/CONFIGURATION__NETWORK: every trained fold), a fold folder "
        "(.../fold_K), or the name of a dataset in the workspace (find-best's choice)",
    )
    add_workspace_argument(parser)


def run(args: argparse.Namespace) -> int:
    console = Console()
    try:
        written = report(args.target, args.workspace)
    except (ValueError, OSError) as error:  # LayoutError, ReportError and CheckpointError are ValueErrors
        return show_error(console, error)
    for path in written:
        console.print(f"report: {path}", soft_wrap=True)
    return 0
