"""Fingerprint a dataset: spacings, shapes and foreground intensities, written to WORKSPACE/DATASET/fingerprint.json."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.text import Text

from mambaseg.cli.cmd_check import dataset_folder, show_report
from mambaseg.cli.main import add_workspace_argument
from mambaseg.data import Dataset, DatasetError, check_dataset, load_dataset
from mambaseg.planning.fingerprint import FINGERPRINT_FILE, Fingerprint, extract_fingerprint


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dataset", help="dataset folder (nnU-Net v2 or Decathlon layout), or its name under WORKSPACE/raw"
    )
    add_workspace_argument(parser)
    parser.add_argument("--workers", type=int, default=None, help="processes reading cases (default: CPUs, at most 8)")


def load_checked_dataset(console: Console, value: str, workspace: Path, workers: int | None) -> Dataset | None:
    """The dataset, after ``check_dataset`` passed; None (with the problems shown) when it did not."""
    try:
        dataset = load_dataset(dataset_folder(value, workspace))
    except DatasetError as error:
        console.print(Text(f"error: {error}", style="bold red"), soft_wrap=True)
        return None
    report = check_dataset(dataset, max_workers=workers, progress=console.is_terminal)
    if not report.ok:
        show_report(console, report, f"{dataset.name} ({dataset.layout} layout)")
        return None
    return dataset


def fingerprint_dataset(console: Console, dataset: Dataset, workspace: Path, workers: int | None) -> Fingerprint:
    """Extract the fingerprint with a progress bar and write it under ``workspace/dataset.name``."""
    with Progress(console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("fingerprint", total=len(dataset.cases))
        fingerprint = extract_fingerprint(dataset, workers, progress=lambda done, _: bar.update(task, completed=done))
    path = workspace / dataset.name / FINGERPRINT_FILE
    fingerprint.save(path)
    console.print(f"fingerprint of {len(fingerprint.cases)} cases: {path}", soft_wrap=True)
    return fingerprint


def run(args: argparse.Namespace) -> int:
    console = Console()
    dataset = load_checked_dataset(console, args.dataset, args.workspace, args.workers)
    if dataset is None:
        return 1
    fingerprint_dataset(console, dataset, args.workspace, args.workers)
    return 0
