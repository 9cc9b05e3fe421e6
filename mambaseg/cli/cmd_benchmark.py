"""Compare networks on a dataset at an equal budget: `mambaseg benchmark DATASET -c 3d_fullres --networks A B`.

Trains every network (and the baseline) on the same folds, validates every held-out case, and writes
``WORKSPACE/DATASET/benchmarks/NAME/``: ``results.json``, ``results.csv``, ``report.md``, ``report.html`` and the
box plot. Runs are ordinary run folders: run the same command again to resume an interrupted benchmark.
"""

from __future__ import annotations

import argparse

from rich.console import Console

from mambaseg.cli.display import show_error
from mambaseg.cli.main import add_dataset_argument, add_workspace_argument
from mambaseg.io.progress import console_progress
from mambaseg.workspace.benchmark import DEFAULT_BASELINE, benchmark
from mambaseg.workspace.nnunet import NnUNetError

FLAGS = {
    "budget_minutes": "--budget-minutes",
    "iterations": "--iterations",
    "val_iterations": "--val-iterations",
    "with_nnunet": "--with-nnunet",
}  # the API's parameter names in errors, as this command's options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataset_argument(parser)
    add_workspace_argument(parser)
    parser.add_argument("-c", "--configuration", default="3d_fullres", help="2d, 3d_fullres or 3d_lowres")
    parser.add_argument("--networks", nargs="+", required=True, help="registered networks to compare")
    parser.add_argument("--folds", nargs="+", default=["0"], help="cross-validation folds to train (default: 0)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument(
        "--iterations", type=int, help="training iterations per run, the same for every network (default 1000)"
    )
    budget.add_argument("--budget-minutes", type=float, help="wall-clock minutes of training epochs per run instead")
    parser.add_argument("--epochs", type=int, default=10, help="epochs the iterations are spread over (default 10)")
    parser.add_argument(
        "--val-iterations", type=int, default=5, help="pseudo-Dice validation iterations per epoch (default 5)"
    )
    parser.add_argument(
        "--baseline", default=DEFAULT_BASELINE, help=f"network the others are tested against ({DEFAULT_BASELINE})"
    )
    parser.add_argument("--name", help="the benchmark's folder under benchmarks/ (default: the configuration)")
    parser.add_argument(
        "--with-nnunet", metavar="PYTHON", help="enter nnU-Net 2.x itself: the python of its installation"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--workers", type=int, default=None, help="processes for check and preprocessing")
    parser.add_argument("overrides", nargs="*", help="config overrides for every run, as key=value")


def run(args: argparse.Namespace) -> int:
    console = Console()
    try:
        result = benchmark(
            args.dataset,
            args.workspace,
            args.configuration,
            args.networks,
            args.folds,
            iterations=args.iterations if args.iterations or args.budget_minutes else 1000,
            budget_minutes=args.budget_minutes,
            epochs=args.epochs,
            val_iterations=args.val_iterations,
            baseline=args.baseline,
            name=args.name,
            overrides=args.overrides,
            with_nnunet=args.with_nnunet,
            device=args.device,
            workers=args.workers,
            progress=console_progress(console),
        )
    except (ValueError, OSError, NnUNetError) as error:
        return show_error(console, error, FLAGS)
    console.print(result.results["verdict"], soft_wrap=True)
    console.print(f"report: {result.files.html}", soft_wrap=True)
    return 0
