"""Preprocess a dataset for training: check, fingerprint and plan where not done yet, then crop, normalise, resample."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.text import Text

from mambaseg.cli.cmd_fingerprint import fingerprint_dataset, load_checked_dataset
from mambaseg.cli.cmd_plan import show_plans
from mambaseg.cli.main import add_workspace_argument
from mambaseg.data import Dataset
from mambaseg.planning.fingerprint import FINGERPRINT_FILE, Fingerprint
from mambaseg.planning.planner import PlanningError, plan_experiment
from mambaseg.planning.plans import PLANS_FILE, Plans, PlansError, load_plans
from mambaseg.preprocessing import preprocess_dataset, preprocessed_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dataset", help="dataset folder (nnU-Net v2 or Decathlon layout), or its name under WORKSPACE/raw"
    )
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


def ensure_plans(console: Console, dataset: Dataset, workspace: Path, workers: int | None) -> Plans:
    """The dataset's plans: read from ``plans.json``, or fingerprinted (where needed) and planned with defaults."""
    folder = workspace / dataset.name
    if (folder / PLANS_FILE).is_file():
        return load_plans(folder / PLANS_FILE)
    if (folder / FINGERPRINT_FILE).is_file():
        fingerprint = Fingerprint.load(folder / FINGERPRINT_FILE)
    else:
        fingerprint = fingerprint_dataset(console, dataset, workspace, workers)
    plans = plan_experiment(fingerprint)
    plans.save(folder / PLANS_FILE)
    show_plans(console, plans)
    note = f"plans with default settings (`mambaseg plan` chooses others): {folder / PLANS_FILE}"
    console.print(note, soft_wrap=True)
    return plans


def preprocess_configurations(
    console: Console,
    dataset: Dataset,
    plans: Plans,
    workspace: Path,
    configurations: list[str],
    workers: int | None,
    force: bool = False,
) -> None:
    """Preprocess each configuration, skipping cases already done (unless ``force``)."""
    for configuration in configurations:
        out = preprocessed_dir(workspace, dataset.name, configuration)
        summary = preprocess_dataset(dataset, plans, configuration, out, workers, force, progress=console.is_terminal)
        done = f"{configuration}: {len(summary.processed)} cases preprocessed"
        console.print(f"{done}, {len(summary.skipped)} already done: {out}", soft_wrap=True)


def run(args: argparse.Namespace) -> int:
    console = Console()
    dataset = load_checked_dataset(console, args.dataset, args.workspace, args.workers)
    if dataset is None:
        return 1
    try:
        plans = ensure_plans(console, dataset, args.workspace, args.workers)
        configurations = args.configurations or list(plans.configurations)
        preprocess_configurations(console, dataset, plans, args.workspace, configurations, args.workers, args.force)
    except (PlansError, PlanningError, ValueError, OSError) as error:  # OSError: a read-only or full disk
        console.print(Text(f"error: {error}", style="bold red"), soft_wrap=True)
        return 1
    return 0
