"""Fingerprint a dataset: spacings, shapes and foreground intensities, written to WORKSPACE/DATASET/fingerprint.json."""

from __future__ import annotations

import argparse

from rich.console import Console

from mambaseg.cli.display import show_error, show_report
from mambaseg.cli.main import add_dataset_argument, add_workspace_argument
from mambaseg.io.progress import console_progress
from mambaseg.workspace import DatasetCheckError, fingerprint


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataset_argument(parser)
    add_workspace_argument(parser)
    parser.add_argument("--workers", type=int, default=None, help="processes reading cases (default: CPUs, at most 8)")


def run(args: argparse.Namespace) -> int:
    console = Console()
    try:
        result = fingerprint(args.dataset, args.workspace, args.workers, progress=console_progress(console))
    except DatasetCheckError as error:
        show_report(console, error.dataset, error.report)
        return 1
    except (ValueError, OSError) as error:
        return show_error(console, error)
    path = args.workspace.dataset(result.dataset_name).fingerprint
    console.print(f"fingerprint of {len(result.cases)} cases: {path}", soft_wrap=True)
    return 0
