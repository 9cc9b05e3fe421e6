"""Predict masks for new images with one run (-m RUN) or as find-best chose for a dataset (-d DATASET).

``mambaseg predict -i INPUT -o OUTPUT -m WORKSPACE/DATASET/runs/CONFIG__NETWORK`` averages the folds of
one run. ``mambaseg predict -i INPUT -o OUTPUT -d DATASET [--workspace W]`` follows
``W/DATASET/inference_instructions.json`` (written by ``mambaseg find-best``): its runs and folds,
their probabilities averaged, then its postprocessing.

INPUT is an image file, a folder of image files (nnU-Net channel names ``CASE_0000.nii.gz`` are grouped
into cases), a DICOM series folder, or a folder of DICOM series folders. Masks are written as
``CASE.nii.gz`` in each input's geometry; outputs that exist are skipped unless ``--overwrite``, so
running the command again resumes. Under ``torchrun`` each process predicts its share of the cases.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text

from mambaseg.cli.main import add_workspace_argument
from mambaseg.inference.batch import (
    BatchOptions,
    CasePredictor,
    RunInfo,
    parts_from_environment,
    predict_cases,
    select_part,
)
from mambaseg.inference.dicom_seg import check_source_series
from mambaseg.inference.ensemble import find_instructed_runs, make_ensemble_predictor
from mambaseg.inference.inputs import InputCase, check_channels, check_output_folder, discover_cases
from mambaseg.inference.runs import CHECKPOINTS, find_run, make_predictor, resolve_device


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", "--input", required=True, help="image file, folder of images, or DICOM series folder(s)")
    parser.add_argument("-o", "--output", required=True, help="folder for the masks (not inside the input)")
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("-m", "--model", help="one run: its folder WORKSPACE/DATASET/runs/CONFIG__NETWORK")
    model.add_argument(
        "-d",
        "--dataset",
        help="predict as `mambaseg find-best DATASET` chose: the runs, folds and postprocessing of "
        "WORKSPACE/DATASET/inference_instructions.json",
    )
    add_workspace_argument(parser)
    parser.add_argument(
        "-f", "--folds", nargs="+", help="with -m: folds to average, e.g. 0 1 2 (default: every trained fold)"
    )
    parser.add_argument("--checkpoint", choices=list(CHECKPOINTS), default="final", help="which checkpoint per fold")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--save-probabilities", action="store_true", help="also write CASE.npz (float16) and CASE.json")
    parser.add_argument("--dicom-seg", action="store_true", help="also write CASE.dcm, a DICOM-SEG, for DICOM input")
    parser.add_argument("--overwrite", action="store_true", help="predict again cases whose outputs exist")
    parser.add_argument("--no-mirroring", action="store_true", help="no test-time mirroring (faster, less accurate)")
    parser.add_argument("--step", type=float, default=0.5, help="sliding-window step as a fraction of the patch")
    parser.add_argument("--num-parts", type=int, help="split the cases into this many parts (default: torchrun's)")
    parser.add_argument("--part-id", type=int, help="the part to predict, 0-based (default: torchrun's rank)")
    parser.add_argument("--series", help="only the DICOM series with this SeriesInstanceUID")


def _parts(args: argparse.Namespace) -> tuple[int, int]:
    num_parts, part_id = parts_from_environment()
    if args.num_parts is not None:
        num_parts, part_id = args.num_parts, 0
    if args.part_id is not None:
        part_id = args.part_id
    if num_parts < 1 or not 0 <= part_id < num_parts:
        raise ValueError(f"--num-parts {num_parts} --part-id {part_id}: needs 0 <= part-id < num-parts")
    return num_parts, part_id


def _find_model(args: argparse.Namespace) -> tuple[Callable[..., CasePredictor], RunInfo]:
    """What ``-m`` or ``-d`` names, checked on disk: a function building its predictor, and what outputs record."""
    if args.model is not None:
        trained = find_run(args.model, args.folds, args.checkpoint)
        info = RunInfo(trained.run_dir.name, trained.plans.channel_names, trained.label_names)
        return partial(make_predictor, trained), info
    if args.folds:
        raise ValueError(f"--folds {' '.join(args.folds)}: with -d the instructions choose the folds; use -m RUN")
    instructed = find_instructed_runs(args.workspace, args.dataset, args.checkpoint)
    first = instructed.runs[0]
    info = RunInfo(instructed.name, first.plans.channel_names, first.label_names)
    return partial(make_ensemble_predictor, instructed), info


def _check_dicom_seg_sources(console: Console, cases: list[InputCase]) -> None:
    dicom = [case for case in cases if case.kind == "dicom"]
    if not dicom:
        console.print("note: --dicom-seg applies to DICOM input only; none of the cases is DICOM", soft_wrap=True)
    for case in dicom:
        check_source_series(case.sources[0], case.series_uid or "")


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("predicting"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[case]}"),
        console=console,
        disable=not console.is_terminal,
    )


def run(args: argparse.Namespace) -> int:
    console = Console()
    output = Path(args.output)
    try:
        if not 0 < args.step <= 1:
            raise ValueError(f"--step {args.step}: must be in (0, 1]")
        num_parts, part_id = _parts(args)
        check_output_folder(args.input, output)
        cases = discover_cases(args.input, args.series)
        build_predictor, info = _find_model(args)
        for case in cases:
            check_channels(case, info.channel_names)
        cases = select_part(cases, num_parts, part_id)
        if args.dicom_seg:
            _check_dicom_seg_sources(console, cases)
            if not args.verbose:
                logging.getLogger("highdicom").setLevel(logging.WARNING)  # it logs every attribute it copies
        predictor = build_predictor(resolve_device(args.device), not args.no_mirroring, args.step)
        options = BatchOptions(args.save_probabilities, args.dicom_seg, args.overwrite)
        with _progress(console) as progress:
            task = progress.add_task("predict", total=len(cases), case="")
            summary = predict_cases(
                predictor, cases, output, info, options, lambda name: progress.update(task, advance=1, case=name)
            )
    except (ValueError, OSError) as error:
        console.print(Text(f"error: {error}", style="bold red"), soft_wrap=True)
        return 1
    part = f" (part {part_id} of {num_parts})" if num_parts > 1 else ""
    skipped = f", {len(summary.skipped)} already there (--overwrite predicts them again)" if summary.skipped else ""
    console.print(f"{len(summary.predicted)} case(s) predicted{skipped}{part}: {output}", soft_wrap=True)
    return 0
