"""Train one fold of one configuration and network: `mambaseg train DATASET -c 3d_fullres -n umamba_bot -f 0`.

Runs the dataset check, plans and preprocesses what is missing, then trains and validates the fold. Extra
``key=value`` arguments override the hydra config (``configs/train.yaml``). Under ``torchrun`` (or with
``--num-gpus N``, which launches it) the run is data-parallel with DDP.
"""

from __future__ import annotations

import argparse
import os
import sys

from rich.console import Console

from mambaseg.cli.display import show_error, show_report
from mambaseg.cli.main import add_dataset_argument, add_workspace_argument, without_option
from mambaseg.io.progress import console_progress
from mambaseg.workspace import DatasetCheckError, train
from mambaseg.workspace.layout import CHECKPOINT_KINDS
from mambaseg.workspace.runtime import launch_torchrun
from mambaseg.workspace.training import dice_line

FLAGS = {
    "continue_training": "--continue",
    "validation_checkpoint": "--val-checkpoint",
    "gpu_memory_gb": "--gpu-memory",
}  # the API's parameter names in errors, as this command's options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataset_argument(parser)
    add_workspace_argument(parser)
    parser.add_argument("-c", "--configuration", default="3d_fullres", help="2d, 3d_fullres or 3d_lowres")
    parser.add_argument("-n", "--network", help="registered network (default: the one planned for the configuration)")
    parser.add_argument("-f", "--fold", default="0", help="fold 0-4 of splits.json, or 'all'")
    parser.add_argument(
        "--continue", dest="continue_training", action="store_true", help="resume the latest checkpoint"
    )
    parser.add_argument(
        "--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: cuda when available)"
    )
    parser.add_argument("--num-gpus", type=int, default=1, help="launch this many DDP processes with torchrun")
    parser.add_argument("--deterministic", action="store_true", help="deterministic algorithms (slower), same weights")
    parser.add_argument("--workers", type=int, default=None, help="processes for check and preprocessing")
    parser.add_argument("--val", action="store_true", help="only validate the fold again from a saved checkpoint")
    parser.add_argument(
        "--val-checkpoint", choices=CHECKPOINT_KINDS, default="final", help="checkpoint --val uses (default: final)"
    )
    parser.add_argument("overrides", nargs="*", help="config overrides as key=value (see configs/train.yaml)")


def run(args: argparse.Namespace) -> int:
    if args.num_gpus > 1 and "WORLD_SIZE" not in os.environ:
        return launch_torchrun(args.num_gpus, without_option(sys.argv[1:], "--num-gpus"))
    console = Console()
    try:
        result = train(
            args.dataset,
            args.workspace,
            args.configuration,
            args.network,
            args.fold,
            args.overrides,
            args.device,
            args.continue_training,
            args.deterministic,
            args.workers,
            validate_only=args.val,
            validation_checkpoint=args.val_checkpoint,
            progress=console_progress(console),
        )
    except DatasetCheckError as error:
        show_report(console, error.dataset, error.report)
        return 1
    except (ValueError, OSError) as error:  # PlansError, PlanningError, CheckpointError; OSError: disk full
        return show_error(console, error, FLAGS)
    if result.validation is not None:
        console.print(f"validation mean Dice {dice_line(result.validation)}", soft_wrap=True)
        if not args.val:
            console.print(f"run finished: {result.fold.folder}", soft_wrap=True)
    return 0
