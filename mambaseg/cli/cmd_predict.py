"""Predict masks for new images with one run or exported model (-m) or as find-best chose (-d DATASET).

``mambaseg predict -i INPUT -o OUTPUT -m WORKSPACE/DATASET/runs/CONFIG__NETWORK`` averages the folds of
one run; ``-m MODEL.zip`` predicts with a model written by ``mambaseg export-model`` (extracted once into
``WORKSPACE/exported_models/``), ``-m MODEL.pt2`` with a torch.export program written by it (on the CPU).
``mambaseg predict -i INPUT -o OUTPUT -d DATASET [--workspace W]`` follows
``W/DATASET/inference_instructions.json`` (written by ``mambaseg find-best``): its runs and folds,
their probabilities averaged, then its postprocessing.

INPUT is an image file, a folder of image files (nnU-Net channel names ``CASE_0000.nii.gz`` are grouped
into cases; a folder of ``CASE_0000`` files only, e.g. RGB PNGs, has a case per file), a DICOM series folder, or a
folder of DICOM series folders. Masks are written as
``CASE.nii.gz`` in each input's geometry; outputs that exist are skipped unless ``--overwrite``, so
running the command again resumes. Under ``torchrun`` each process predicts its share of the cases.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from rich.console import Console

from mambaseg.cli.display import show_error
from mambaseg.cli.main import add_workspace_argument
from mambaseg.inference.precision import PRECISION_CHOICES
from mambaseg.io.progress import console_progress
from mambaseg.workspace import predict
from mambaseg.workspace.layout import CHECKPOINT_KINDS

FLAGS = {
    "step": "--step",
    "precision": "--precision",
    "num_parts": "--num-parts",
    "part_id": "--part-id",
    "save_probabilities": "--save-probabilities",
    "dicom_seg": "--dicom-seg",
    "segment_codes": "--segment-codes",
    "statistics": "--statistics",
    "rtstruct": "--rtstruct",
}  # the API's parameter names in errors, as this command's options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", "--input", required=True, help="image file, folder of images, or DICOM series folder(s)")
    parser.add_argument("-o", "--output", required=True, help="folder for the masks (not inside the input)")
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument(
        "-m",
        "--model",
        help="one run (its folder WORKSPACE/DATASET/runs/CONFIG__NETWORK), or a model.zip or model.pt2 "
        "(torch.export program, CPU) from `mambaseg export-model`",
    )
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
    parser.add_argument(
        "--checkpoint",
        choices=[k for k in CHECKPOINT_KINDS if k != "latest"],
        help="which checkpoint per fold (default: final; a zip holds the kind it was exported with)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="auto, cpu, cuda, cuda:N or mps (default: cuda when available; a .pt2 program: the cpu it was exported "
        "for)",
    )
    parser.add_argument("--save-probabilities", action="store_true", help="also write CASE.npz (float16) and CASE.json")
    parser.add_argument("--dicom-seg", action="store_true", help="also write CASE.dcm, a DICOM-SEG, for DICOM input")
    parser.add_argument(
        "--segment-codes",
        help="with --dicom-seg: JSON file giving labels coded concepts, e.g. "
        '{"liver": {"category": ["SCT", "123037004", "Anatomical Structure"], "type": ["SCT", "10200004", "Liver"]}}',
    )
    parser.add_argument("--overwrite", action="store_true", help="predict again cases whose outputs exist")
    parser.add_argument("--no-mirroring", action="store_true", help="no test-time mirroring (faster, less accurate)")
    parser.add_argument(
        "--step", type=float, help="sliding-window step as a fraction of the patch (default: 0.5; with --fast 0.75)"
    )
    parser.add_argument(
        "--precision",
        choices=PRECISION_CHOICES,
        default="auto",
        help="autocast precision of the networks: auto (default) is bfloat16 on CPUs with native bf16 (AVX512_BF16 "
        "or AMX), float16 on CUDA, float32 elsewhere; logits stay float32, the Mamba scan computes in float32",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the networks, once per process and window batch shape, at the first case; on the CPU "
        "it did not pay in docs/benchmarks.md (tens of seconds to compile, at most 7%% less per case)",
    )
    parser.add_argument("--fast", action="store_true", help="no mirroring and step 0.75 (unless --step is given)")
    parser.add_argument("--num-parts", type=int, help="split the cases into this many parts (default: torchrun's)")
    parser.add_argument("--part-id", type=int, help="the part to predict, 0-based (default: torchrun's rank)")
    parser.add_argument("--series", help="only the DICOM series with this SeriesInstanceUID")
    parser.add_argument(
        "--rtstruct",
        action="store_true",
        help="also write CASE_rtstruct.dcm, an RT Structure Set (one ROI per label, contours per slice), for DICOM "
        "input",
    )
    parser.add_argument(
        "--statistics",
        action="store_true",
        help="also write CASE_statistics.json per case (volume in mL, voxels, components and intensities per "
        "structure) and statistics.csv for the output folder",
    )


def run(args: argparse.Namespace) -> int:
    console = Console()
    output = Path(args.output)
    if args.dicom_seg and not args.verbose:
        logging.getLogger("highdicom").setLevel(logging.WARNING)  # it logs every attribute it copies
    try:
        summary = predict(
            args.input,
            output,
            model=args.model,
            dataset=args.dataset,
            workspace=args.workspace,
            folds=args.folds,
            checkpoint=args.checkpoint,
            device=args.device,
            mirroring=not args.no_mirroring,
            step=args.step,
            precision=args.precision,
            compile=args.compile,
            fast=args.fast,
            save_probabilities=args.save_probabilities,
            dicom_seg=args.dicom_seg,
            segment_codes=args.segment_codes,
            overwrite=args.overwrite,
            num_parts=args.num_parts,
            part_id=args.part_id,
            series=args.series,
            statistics=args.statistics,
            rtstruct=args.rtstruct,
            progress=console_progress(console),
        )
    except (ValueError, OSError) as error:
        return show_error(console, error, FLAGS)
    part = f" (part {summary.part_id} of {summary.num_parts})" if summary.num_parts > 1 else ""
    skipped = f", {len(summary.skipped)} already there (--overwrite predicts them again)" if summary.skipped else ""
    console.print(f"{len(summary.predicted)} case(s) predicted{skipped}{part}: {output}", soft_wrap=True)
    return 0
