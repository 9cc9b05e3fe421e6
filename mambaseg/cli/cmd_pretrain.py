"""Pretrain an encoder by image classification: `mambaseg pretrain IMAGE_FOLDER --network vmamba_tiny`.

IMAGE_FOLDER holds ``train/CLASS/*.JPEG`` and ``val/CLASS/*`` (ImageNet's layout). The run goes to
``WORKSPACE/pretraining/FOLDER__NETWORK/`` and ends with ``encoder.pt``, which a segmentation run starts
from with ``network.pretrained=PATH``. Extra ``key=value`` arguments override ``configs/pretrain/default.yaml``.
Under ``torchrun`` (or with ``--num-gpus N``, which launches it) the run is data-parallel with DDP.
"""

from __future__ import annotations

import argparse
import os
import sys

from rich.console import Console

from mambaseg.cli.display import show_error
from mambaseg.cli.main import add_workspace_argument, without_option
from mambaseg.pretraining import list_pretrain_models
from mambaseg.workspace import pretrain
from mambaseg.workspace.runtime import launch_torchrun

FLAGS = {
    "continue_training": "--continue",
    "config_name": "--config",
}  # the API's parameter names in errors, as this command's options


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
        return launch_torchrun(args.num_gpus, without_option(sys.argv[1:], "--num-gpus"))
    console = Console()
    try:
        files = pretrain(
            args.image_folder,
            args.workspace,
            args.network,
            args.config,
            args.overrides,
            args.device,
            args.continue_training,
        )
    except (FileNotFoundError, ValueError) as error:  # CheckpointError is a ValueError
        return show_error(console, error, FLAGS)
    if int(os.environ.get("RANK", 0)) == 0:
        console.print(f"pretraining finished: {files.encoder}", soft_wrap=True)
    return 0
