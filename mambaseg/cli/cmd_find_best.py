"""Rank trained runs and their ensembles by cross-validation Dice, choose postprocessing, write the instructions."""

from __future__ import annotations

import argparse
import math

from rich.console import Console
from rich.table import Table
from rich.text import Text

from mambaseg.cli.display import show_error
from mambaseg.cli.main import add_dataset_argument, add_workspace_argument
from mambaseg.inference.postprocessing import InferenceInstructions
from mambaseg.workspace import find_best
from mambaseg.workspace.preparation import open_dataset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataset_argument(parser)
    add_workspace_argument(parser)
    parser.add_argument(
        "--folds", type=int, nargs="+", help="folds to compare on (default: all, or those every run has validated)"
    )
    parser.add_argument("--no-ensembles", action="store_true", help="rank single runs only")


def _cell(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.4f}"


def show_selection(console: Console, instructions: InferenceInstructions, label_names: dict[str, str]) -> None:
    """The ranking table, the skipped candidates, and the chosen postprocessing."""
    table = Table(title=f"{instructions.dataset}: folds {instructions.folds}", title_justify="left")
    table.add_column("rank", justify="right")
    table.add_column("candidate")
    table.add_column("mean Dice", justify="right")
    labels = list(label_names)  # keys as in dice_per_class: "1", or "(1, 2)" for a region
    for label in labels:
        table.add_column(label_names[label], justify="right")
    for entry in instructions.ranking:
        per_class = [_cell(entry["dice_per_class"].get(label)) for label in labels]
        style = "bold green" if entry["rank"] == 1 else None
        table.add_row(str(entry["rank"]), entry["candidate"], _cell(entry["mean_dice"]), *per_class, style=style)
    console.print(table)
    for entry in instructions.skipped:
        console.print(Text(f"skipped {entry['candidate']}: {entry['reason']}", style="yellow"), soft_wrap=True)
    scores = instructions.cross_validation
    for step in instructions.postprocessing:
        names = ", ".join(label_names.get(str(label), str(label)) for label in step["labels"])
        console.print(
            f"postprocessing: keep the largest component of {names}" + (" together" if step["jointly"] else "")
        )
    if not instructions.postprocessing:
        console.print("postprocessing: none improves the cross-validation Dice")
    console.print(
        f"mean Dice {_cell(scores['mean_dice'])}, after postprocessing {_cell(scores['mean_dice_postprocessed'])}"
    )


def run(args: argparse.Namespace) -> int:
    console = Console()
    try:
        dataset = open_dataset(args.dataset, args.workspace)
        instructions = find_best(dataset, args.workspace, args.folds, ensembles=not args.no_ensembles)
    except (ValueError, OSError) as error:  # DatasetError, SelectionError and SplitsError are ValueErrors
        return show_error(console, error)

    def key(value: int | list[int]) -> str:  # as dice_per_class has it: "1", or "(1, 2)" / "(2,)" for regions
        if dataset.has_regions:
            return str(tuple(value) if isinstance(value, list) else (value,))
        return str(value)

    names = {
        key(value): name
        for name, value in dataset.labels.items()
        if name != "ignore" and (isinstance(value, list) or value > 0)
    }
    show_selection(console, instructions, names)
    console.print(f"instructions: {args.workspace.dataset(dataset.name).instructions}", soft_wrap=True)
    return 0
