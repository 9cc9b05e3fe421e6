"""Pretrain an encoder by image classification: `mambaseg pretrain IMAGE_FOLDER --network vmamba_tiny`.

IMAGE_FOLDER holds ``train/CLASS/*.JPEG`` and ``val/CLASS/*`` (ImageNet's layout). The run goes to
``WORKSPACE/pretraining/FOLDER__NETWORK/`` and ends with ``encoder.pt``, which a segmentation run starts
from with ``network.pretrained=PATH``. Extra ``key=value`` arguments override ``configs/pretrain/default.yaml``.
Under ``torchrun`` (or with ``--num-gpus N``, which launches it) the run is data-parallel with DDP.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch.distributed as dist
from rich.console import Console
from rich.text import Text

from mambaseg.cli.cmd_train import _init_distributed, _launch_torchrun
from mambaseg.cli.main import add_workspace_argument
from mambaseg.planning.checkpoint import CheckpointError
from mambaseg.pretraining import ENCODER_FILE, list_pretrain_models, pretrain
from mambaseg.workspace.config import compose_pretrain_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image_folder", help="folder with train/CLASS/* and val/CLASS/* images")
    add_workspace_argument(parser)
    parser.add_argument(
        "-n", "--network", default="vmamba_tiny", help=f"classifier to pretrain: {', '.join(list_pretrain_models())}"
    )
    parser.add_argument("--config", default="default", help="config file in configs/pretrain (without .yaml)")
    parser.add_argument(
        "--continue", dest="continue_training", action="store_true", help="resume the latest checkpoint"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--num-gpus", type=int, default=1, help="launch this many DDP processes with torchrun")
    parser.add_argument("overrides", nargs="*", help="config overrides as key=value (see configs/pretrain/)")


def run(args: argparse.Namespace) -> int:
    if args.num_gpus > 1 and "WORLD_SIZE" not in os.environ:
        return _launch_torchrun(args.num_gpus)
    console = Console()
    device, is_main = _init_distributed(args.device)
    folder = Path(args.image_folder).expanduser().resolve()
    run_dir = args.workspace / "pretraining" / f"{folder.name}__{args.network}"
    try:
        config = compose_pretrain_config(args.config, args.overrides)
        pretrain(folder, run_dir, args.network, config, device, args.continue_training)
    except (CheckpointError, FileNotFoundError, ValueError) as error:
        console.print(Text(f"error: {error}", style="bold red"), soft_wrap=True)
        return 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if is_main:
        console.print(f"pretraining finished: {run_dir / ENCODER_FILE}", soft_wrap=True)
    return 0
