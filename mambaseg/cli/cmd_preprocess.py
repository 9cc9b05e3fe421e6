"""Preprocess a dataset for training: check, fingerprint and plan where not done yet, then crop, normalise, resample."""

from __future__ import annotations

import argparse

from rich.console import Console

from mambaseg.cli.display import show_error, show_report
from mambaseg.cli.main import add_dataset_argument, add_workspace_argument
from mambaseg.io.progress import console_progress
from mambaseg.workspace import DatasetCheckError, preprocess


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = "%(prog)s DATASET [-c CONFIG [CONFIG ...]] [--workspace W] [--workers N] [--force]"
    add_dataset_argument(parser)
    add_workspace_argument(parser)
    parser.add_argument(
        "-c",
        "--configurations",
        nargs="+",
        metavar="CONFIG",
        help="configurations of the plans to preprocess, e.g. 3d_fullres 2d (default: all of them)",
    )
    parser.add_argument("--workers", type=int, default=None, help="processes (default: one per CPU; 1: no extra one)")
    parser.add_argument("--force", action="store_true", help="preprocess cases again even where their files exist")


def run(args: argparse.Namespace) -> int:
    console = Console()
    try:
        summaries = preprocess(
            args.dataset, args.workspace, args.configurations, args.workers, args.force, console_progress(console)
        )
    except DatasetCheckError as error:
        show_report(console, error.dataset, error.report)
        return 1
    except (ValueError, OSError) as error:  # PlansError, PlanningError; OSError: a read-only or full disk
        return show_error(console, error)
    for configuration, summary in summaries.items():
        redone = f" ({len(summary.redone)} again: their sources or plan changed)" if summary.redone else ""
        done = f"{configuration}: {len(summary.processed)} cases preprocessed{redone}"
        console.print(f"{done}, {len(summary.skipped)} already done: {summary.folder}", soft_wrap=True)
    return 0
