"""Evaluate predicted masks against references: Dice, HD95 and surface Dice per case and label, into summary.json;
with --statistics, each structure's measurements too."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from mambaseg.cli.display import show_error
from mambaseg.evaluation.metrics import DEFAULT_TOLERANCE_MM, METRICS
from mambaseg.evaluation.summary import EvaluationError
from mambaseg.inference.measurements import CASE_STATISTICS_ENDING, STATISTICS_TABLE
from mambaseg.workspace import evaluate

DEFAULT_WORKERS = min(8, os.cpu_count() or 1)


FLAGS = {
    "tolerance_mm": "--tolerance-mm",
    "ignore_label": "--ignore-label",
}  # the API's parameter names in errors, as this command's options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prediction", type=Path, help="folder of predicted masks (or one mask file)")
    parser.add_argument("reference", type=Path, help="folder of reference masks matched by file name (or one file)")
    parser.add_argument(
        "-o", "--output", type=Path, help="folder for summary.json and metrics.csv (default: the prediction folder)"
    )
    parser.add_argument("--labels", type=int, nargs="+", help="labels to score (default: every non-zero label found)")
    parser.add_argument(
        "--tolerance-mm",
        type=float,
        nargs="+",
        default=[DEFAULT_TOLERANCE_MM],
        help=f"surface Dice tolerance in mm: one for all labels, or one per --labels entry (default: "
        f"{DEFAULT_TOLERANCE_MM:g})",
    )
    parser.add_argument("--ignore-label", type=int, help="reference value whose voxels are not scored")
    parser.add_argument(
        "--workers", type=int, default=DEFAULT_WORKERS, help=f"processes scoring cases (default: {DEFAULT_WORKERS})"
    )
    parser.add_argument(
        "--statistics",
        action="store_true",
        help=f"also measure each structure of both masks (volume, components) into CASE{CASE_STATISTICS_ENDING} and "
        f"{STATISTICS_TABLE} in the output folder",
    )
    parser.add_argument(
        "--images",
        type=Path,
        metavar="FOLDER",
        help="the cases' images (CASE_0000.nii.gz, ...) for --statistics to measure intensities in",
    )


def _tolerances(args: argparse.Namespace) -> float | dict[int, float]:
    if len(args.tolerance_mm) == 1:
        return args.tolerance_mm[0]
    if args.labels is None or len(args.labels) != len(args.tolerance_mm):
        raise EvaluationError(
            f"--tolerance-mm {args.tolerance_mm}: give one tolerance, or one per --labels entry ({args.labels})"
        )
    return dict(zip(args.labels, args.tolerance_mm, strict=True))


def _cell(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.4f}"


def show_means(console: Console, summary: Mapping[str, Any]) -> None:
    """The per-label means and the foreground mean as a table."""
    table = Table(title=f"{len(summary['cases'])} cases", title_justify="left")
    table.add_column("label")
    for metric in METRICS:
        table.add_column(metric, justify="right")
    for label, means in summary["mean"].items():
        table.add_row(label, *(_cell(means[metric]) for metric in METRICS))
    table.add_row("foreground", *(_cell(summary["foreground_mean"][metric]) for metric in METRICS), style="bold")
    console.print(table)


def run(args: argparse.Namespace) -> int:
    console = Console()
    if args.images is not None and not args.statistics:
        return show_error(console, f"--images {args.images}: intensities are measured only with --statistics")
    try:
        summary, json_path, csv_path = evaluate(
            args.prediction,
            args.reference,
            args.output,
            args.labels,
            _tolerances(args),
            args.ignore_label,
            args.workers,
            args.statistics,
            args.images,
        )
    except (ValueError, OSError) as error:  # EvaluationError and ImageReadError are ValueErrors
        return show_error(console, error, FLAGS)
    for path in summary["unmatched_predictions"]:
        console.print(Text(f"warning: {path}: no reference, not evaluated", style="yellow"), soft_wrap=True)
    show_means(console, summary)
    console.print(f"summary: {json_path}\nper case: {csv_path}", soft_wrap=True)
    if args.statistics:
        console.print(f"statistics: {json_path.with_name(STATISTICS_TABLE)}", soft_wrap=True)
    return 0
