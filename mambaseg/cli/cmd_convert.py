"""Convert a dataset (Decathlon or nnU-Net v2 layout) into a new nnU-Net v2 folder ``DatasetXXX_Name``."""

from __future__ import annotations

import argparse
import re

from rich.console import Console
from rich.text import Text

from mambaseg.data import DatasetError, convert_to_nnunetv2, load_dataset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="the dataset folder to convert; it is only read")
    parser.add_argument("out", help="folder in which DatasetXXX_Name is created")
    parser.add_argument(
        "--id", type=int, dest="dataset_id", help="dataset number, 1-999 (default: from a TaskNN_ or DatasetNNN_ name)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty DatasetXXX_Name folder")


def run(args: argparse.Namespace) -> int:
    console = Console()
    try:
        dataset = load_dataset(args.dataset)
        dataset_id = args.dataset_id if args.dataset_id is not None else _id_from_name(dataset.root.name)
        target = convert_to_nnunetv2(dataset, args.out, dataset_id, overwrite=args.overwrite)
    except (DatasetError, FileExistsError, ValueError) as error:
        console.print(Text(f"error: {error}", style="bold red"), soft_wrap=True)
        return 1
    summary = f"wrote {len(dataset.cases)} training and {len(dataset.test_images)} test cases to {target}"
    console.print(Text(summary), soft_wrap=True)
    return 0


def _id_from_name(folder_name: str) -> int:
    match = re.match(r"(?:Task|Dataset)(\d+)_", folder_name)
    if match is None:
        raise ValueError(f"{folder_name}: cannot tell the dataset number from the folder name; give --id")
    return int(match[1])
