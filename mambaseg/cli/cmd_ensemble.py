"""Average the saved probabilities of several prediction folders into masks (as nnUNetv2_ensemble).

``mambaseg ensemble -i FOLDER FOLDER [...] -o OUTPUT`` averages ``CASE.npz`` of the cases present in every
folder (written by ``predict --save-probabilities``, or by a fold's validation) and writes ``OUTPUT/CASE.nii.gz``
in each case's geometry. Masks that exist are skipped unless ``--overwrite``.
"""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.text import Text

from mambaseg.cli.display import show_error
from mambaseg.io.progress import console_progress
from mambaseg.workspace import ensemble

FLAGS = {
    "inputs": "-i/--input",
    "output": "-o/--output",
    "save_probabilities": "--save-probabilities",
}  # the API's parameter names in errors, as this command's options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-i", "--input", nargs="+", required=True, help="two or more folders of CASE.npz (with CASE.json or masks)"
    )
    parser.add_argument("-o", "--output", required=True, help="folder for the averaged masks, CASE.nii.gz")
    parser.add_argument("--save-probabilities", action="store_true", help="also write the averaged CASE.npz")
    parser.add_argument("--overwrite", action="store_true", help="average again cases whose mask exists")


def run(args: argparse.Namespace) -> int:
    console = Console()
    try:
        summary = ensemble(args.input, args.output, args.overwrite, args.save_probabilities, console_progress(console))
    except (ValueError, OSError) as error:  # EnsembleError and ImageReadError are ValueErrors
        return show_error(console, error, FLAGS)
    if summary.incomplete:
        listing = ", ".join(summary.incomplete)
        console.print(Text(f"warning: not in every folder, left out: {listing}", style="yellow"), soft_wrap=True)
    console.print(
        f"{len(summary.written)} case(s) averaged into {args.output}"
        + (f", {len(summary.skipped)} existing mask(s) skipped" if summary.skipped else ""),
        soft_wrap=True,
    )
    return 0
