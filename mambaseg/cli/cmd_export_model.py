"""Export a trained model as one zip that `mambaseg predict -m MODEL.zip` predicts with, on any machine.

``mambaseg export-model DATASET MODEL.zip [--workspace W]`` exports what ``mambaseg find-best DATASET`` chose
(``W/DATASET/inference_instructions.json``: its runs, folds and postprocessing); ``--runs RUN ...`` exports
the runs named instead (run folders, or their names under ``W/DATASET/runs``), ``--folds`` some of their folds.
The zip holds each fold's plan and checkpoint, the dataset's labels and channel names, the instructions, and a
manifest with the mambaseg version and each file's SHA-256 (format: ``mambaseg.workspace.export``).

``mambaseg export-model DATASET MODEL.pt2 --runs RUN [--folds ...]`` writes one run's folds as a ``torch.export``
program instead (the output's suffix chooses), with the record prediction needs in its extra files; it runs with
``predict -m MODEL.pt2``, or in plain PyTorch with only ``mambaseg_kernels`` imported
(format: ``mambaseg.workspace.program``).
"""

from __future__ import annotations

import argparse

from rich.console import Console

from mambaseg.cli.display import show_error
from mambaseg.cli.main import add_workspace_argument
from mambaseg.workspace.export import export_model

FLAGS = {"runs": "--runs", "folds": "--folds", "checkpoint": "--checkpoint"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # the positionals first: after --runs or --folds (lists) they would be taken as more runs or folds
    parser.usage = (
        "%(prog)s DATASET OUTPUT [--workspace W] [--runs RUN [RUN ...]] [--folds F [F ...]] [--checkpoint {final,best}]"
    )
    parser.add_argument("dataset", help="the dataset's name in the workspace (its folder WORKSPACE/DATASET)")
    parser.add_argument(
        "output",
        help="the file to write; its suffix chooses the format: model.zip (the runs' checkpoints and plans, for "
        "mambaseg on any machine) or model.pt2 (one run's folds as a torch.export program with a dynamic batch, "
        "for predict -m or plain PyTorch with mambaseg_kernels)",
    )
    add_workspace_argument(parser)
    parser.add_argument(
        "--runs",
        nargs="+",
        help="export these runs (CONFIG__NETWORK names or folders) instead of what find-best chose",
    )
    parser.add_argument("--folds", nargs="+", help="with --runs: the folds to export (default: every trained fold)")
    parser.add_argument("--checkpoint", choices=["final", "best"], default="final", help="which checkpoint per fold")


def run(args: argparse.Namespace) -> int:
    console = Console()
    try:
        exported = export_model(
            args.dataset, args.output, args.workspace, runs=args.runs, folds=args.folds, checkpoint=args.checkpoint
        )
    except (ValueError, OSError) as error:
        return show_error(console, error, FLAGS)
    manifest = exported.manifest
    if "program_sha256" in manifest:
        entry = manifest["runs"][0]
        console.print(
            f"exported {entry['run']}: folds {' '.join(entry['folds'])} ({manifest['checkpoint']}) as a torch.export "
            f"program, batch {manifest['batch']}, patch {manifest['patch_size']}: {exported.path}",
            soft_wrap=True,
        )
        return 0
    for entry in manifest["runs"]:
        console.print(f"{entry['run']}: folds {' '.join(entry['folds'])} ({manifest['checkpoint']})", soft_wrap=True)
    steps = len(manifest["postprocessing"])
    console.print(
        f"exported {len(manifest['runs'])} run(s), {len(manifest['files'])} files, {steps} postprocessing step(s): "
        f"{exported.path}",
        soft_wrap=True,
    )
    return 0
