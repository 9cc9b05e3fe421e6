"""Plan the experiment: spacing, configurations, networks, patch and batch sizes, into WORKSPACE/DATASET/plans.json."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table
from rich.text import Text

from mambaseg.cli.cmd_fingerprint import fingerprint_dataset, load_checked_dataset
from mambaseg.cli.main import add_workspace_argument
from mambaseg.planning.fingerprint import FINGERPRINT_FILE, Fingerprint
from mambaseg.planning.planner import PlanningError, plan_experiment
from mambaseg.planning.plans import PLANS_FILE, Plans


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dataset", help="dataset folder (nnU-Net v2 or Decathlon layout), or its name under WORKSPACE/raw"
    )
    add_workspace_argument(parser)
    parser.add_argument("--gpu-memory", type=float, default=8.0, help="training memory budget in GB (default: 8)")
    parser.add_argument(
        "--network", default=None, help="registered network for every configuration (default: umamba_bot)"
    )
    parser.add_argument("--workers", type=int, default=None, help="processes reading cases (default: CPUs, at most 8)")


def show_plans(console: Console, plans: Plans) -> None:
    table = Table(title=f"{plans.dataset_name}: plans for {plans.gpu_memory_gb:g} GB", title_justify="left")
    for column in ("configuration", "network", "spacing", "patch", "batch", "memory GB"):
        table.add_column(column)
    for name, cfg in plans.configurations.items():
        spacing = " x ".join(f"{s:.3g}" for s in cfg.spacing)
        patch = " x ".join(str(p) for p in cfg.patch_size)
        table.add_row(name, cfg.network, spacing, patch, str(cfg.batch_size), f"{cfg.estimated_memory_gb:.2f}")
    console.print(table)


def run(args: argparse.Namespace) -> int:
    console = Console()
    dataset = load_checked_dataset(console, args.dataset, args.workspace, args.workers)
    if dataset is None:
        return 1
    path = args.workspace / dataset.name / FINGERPRINT_FILE
    if path.is_file():
        fingerprint = Fingerprint.load(path)
    else:
        fingerprint = fingerprint_dataset(console, dataset, args.workspace, args.workers)
    try:
        plans = plan_experiment(fingerprint, args.gpu_memory, args.network)
    except PlanningError as error:
        console.print(Text(f"error: {error}", style="bold red"), soft_wrap=True)
        return 1
    out = args.workspace / dataset.name / PLANS_FILE
    plans.save(out)
    show_plans(console, plans)
    console.print(f"plans: {out}", soft_wrap=True)
    return 0
