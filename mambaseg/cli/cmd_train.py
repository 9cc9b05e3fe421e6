"""Train one fold of one configuration and network: `mambaseg train DATASET -c 3d_fullres -n umamba_bot -f 0`.

Runs the dataset check, plans and preprocesses what is missing, then trains. Extra ``key=value``
arguments override the hydra config (``configs/train.yaml``). Under ``torchrun`` (or with
``--num-gpus N``, which launches it) the run is data-parallel with DDP.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import torch
import torch.distributed as dist
from rich.console import Console
from rich.text import Text

from mambaseg.cli.cmd_fingerprint import load_checked_dataset
from mambaseg.cli.cmd_preprocess import ensure_plans, preprocess_configurations
from mambaseg.cli.main import add_workspace_argument
from mambaseg.planning.checkpoint import CheckpointError
from mambaseg.planning.fingerprint import FINGERPRINT_FILE, Fingerprint
from mambaseg.planning.planner import PlanningError, plan_experiment
from mambaseg.planning.plans import PlansError
from mambaseg.training.run import train_fold
from mambaseg.training.setup import RunSpec, choose_plan
from mambaseg.training.validation_only import CHECKPOINTS, validate_checkpoint
from mambaseg.workspace.config import compose_train_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dataset", help="dataset folder (nnU-Net v2 or Decathlon layout), or its name under WORKSPACE/raw"
    )
    add_workspace_argument(parser)
    parser.add_argument("-c", "--configuration", default="3d_fullres", help="2d, 3d_fullres or 3d_lowres")
    parser.add_argument("-n", "--network", help="registered network (default: the one planned for the configuration)")
    parser.add_argument("-f", "--fold", default="0", help="fold 0-4 of splits.json, or 'all'")
    parser.add_argument(
        "--continue", dest="continue_training", action="store_true", help="resume the latest checkpoint"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--num-gpus", type=int, default=1, help="launch this many DDP processes with torchrun")
    parser.add_argument("--deterministic", action="store_true", help="deterministic algorithms (slower), same weights")
    parser.add_argument("--workers", type=int, default=None, help="processes for check and preprocessing")
    parser.add_argument("--val", action="store_true", help="only validate the fold again from a saved checkpoint")
    parser.add_argument(
        "--val-checkpoint", choices=sorted(CHECKPOINTS), default="final", help="checkpoint --val uses (default: final)"
    )
    parser.add_argument("overrides", nargs="*", help="config overrides as key=value (see configs/train.yaml)")


def _without_num_gpus(argv: list[str]) -> list[str]:
    """The arguments minus ``--num-gpus N`` / ``--num-gpus=N``."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--num-gpus":
            skip = True
        elif not arg.startswith("--num-gpus="):
            kept.append(arg)
    return kept


def _launch_torchrun(num_gpus: int) -> int:
    """Re-run this command under torchrun with ``num_gpus`` processes."""
    argv = _without_num_gpus(sys.argv[1:])
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={num_gpus}", "-m", "mambaseg", *argv]
    return subprocess.call(command)


def _device(choice: str, local_rank: int) -> torch.device:
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(choice)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def _init_distributed(device_choice: str) -> tuple[torch.device, bool]:
    """Join the process group when started by torchrun; returns the device and whether this is rank 0."""
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = _device(device_choice, local_rank)
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device, int(os.environ.get("RANK", 0)) == 0


def _make_deterministic() -> None:
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def run(args: argparse.Namespace) -> int:
    if args.num_gpus > 1 and "WORLD_SIZE" not in os.environ:
        return _launch_torchrun(args.num_gpus)
    console = Console()
    device, is_main = _init_distributed(args.device)
    if args.deterministic:
        _make_deterministic()
    try:
        config = compose_train_config(args.overrides)
        dataset = load_checked_dataset(console, args.dataset, args.workspace, args.workers)
        if dataset is None:
            return 1
        if is_main:
            plans = ensure_plans(console, dataset, args.workspace, args.workers)
            preprocess_configurations(console, dataset, plans, args.workspace, [args.configuration], args.workers)
        if dist.is_initialized():
            dist.barrier()
        plans = ensure_plans(console, dataset, args.workspace, args.workers)

        def replan(network: str):
            fingerprint = Fingerprint.load(args.workspace / dataset.name / FINGERPRINT_FILE)
            return plan_experiment(fingerprint, plans.gpu_memory_gb, network=network)

        plan = choose_plan(plans, args.configuration, args.network, replan)
        spec = RunSpec(args.workspace, dataset, plans, args.configuration, plan, args.fold)
        if args.val:
            summary = validate_checkpoint(spec, config, device, args.val_checkpoint)
            console.print(
                f"validation mean Dice {summary['mean_dice']:.4f}: {summary['dice_per_class']}", soft_wrap=True
            )
            return 0
        run_dir = train_fold(spec, config, device, args.continue_training)
    except (PlansError, PlanningError, CheckpointError, ValueError, OSError) as error:  # OSError: disk full
        console.print(Text(f"error: {error}", style="bold red"), soft_wrap=True)
        return 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if is_main:
        console.print(f"run finished: {run_dir}", soft_wrap=True)
    return 0
