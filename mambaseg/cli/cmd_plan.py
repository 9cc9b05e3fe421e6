"""Plan the experiment: spacing, configurations, networks, patch and batch sizes, into WORKSPACE/DATASET/plans.json."""

from __future__ import annotations

import argparse

from rich.console import Console

from mambaseg.cli.display import show_error, show_plans, show_report
from mambaseg.cli.main import add_dataset_argument, add_workspace_argument
from mambaseg.io.progress import console_progress
from mambaseg.networks.families import DEFAULT_NETWORK
from mambaseg.workspace import DatasetCheckError, plan

FLAGS = {
    "gpu_memory_gb": "--gpu-memory",
    "plans_from": "--plans-from",
    "network": "--network",
}  # the API's parameter names in errors, as this command's options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataset_argument(parser)
    add_workspace_argument(parser)
    parser.add_argument("--gpu-memory", type=float, default=8.0, help="training memory budget in GB (default: 8)")
    parser.add_argument(
        "--network", default=None, help=f"registered network for every configuration (default: {DEFAULT_NETWORK})"
    )
    parser.add_argument(
        "--plans-from",
        default=None,
        metavar="SOURCE",
        help="a dataset of the workspace (or a plans.json) whose networks, topologies, patch and batch sizes and "
        "spacings to keep, with this dataset's normalisation and labels, to fine-tune its trained network here",
    )
    parser.add_argument("--workers", type=int, default=None, help="processes reading cases (default: CPUs, at most 8)")


def run(args: argparse.Namespace) -> int:
    console = Console()
    try:
        plans = plan(
            args.dataset,
            args.workspace,
            args.gpu_memory,
            args.network,
            args.workers,
            console_progress(console),
            plans_from=args.plans_from,
        )
    except DatasetCheckError as error:
        show_report(console, error.dataset, error.report)
        return 1
    except (ValueError, OSError) as error:  # PlanningError and DatasetError are ValueErrors
        return show_error(console, error, FLAGS)
    show_plans(console, plans)
    console.print(f"plans: {args.workspace.dataset(plans.dataset_name).plans}", soft_wrap=True)
    return 0
