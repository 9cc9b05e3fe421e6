"""Run the whole pipeline on the built-in synthetic dataset (or yours): check, plan, preprocess, train, predict,
evaluate.

Each stage is the same command a user would type, and a second run reuses what is finished. Training
uses ``trainer=demo``: at most 10 epochs, as many as fit in its 5-minute time budget
(``trainer.time_budget_minutes``). At the end the training's wall time and epochs and the Dice per
structure are printed, and overlay PNGs of a few slices (image, reference, prediction) are written
beside the training curves.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.rule import Rule
from rich.table import Table

from mambaseg.cli.display import show_error
from mambaseg.cli.main import add_workspace_argument, main
from mambaseg.data import load_dataset
from mambaseg.io import read_image
from mambaseg.io.atomic import write_atomically
from mambaseg.planning.checkpoint import load_checkpoint
from mambaseg.planning.plans import load_plans
from mambaseg.workspace.layout import EvaluationFiles

OVERLAY_CASES = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_workspace_argument(parser)
    parser.add_argument("--dataset", type=Path, help="run on this dataset folder instead of the synthetic demo dataset")
    parser.add_argument("--network", help="registered network to train (default: the planned one)")
    parser.add_argument("--configuration", default="3d_fullres", help="configuration to train (default: 3d_fullres)")
    parser.add_argument("overrides", nargs="*", help="training config overrides as key=value")


class StageFailed(Exception):
    """A stage of the demo ended with an error, which it has shown; the message names the command."""


def _stage(console: Console, title: str, argv: list[str]) -> None:
    console.print(Rule(title))
    status = main(argv)
    if status != 0:
        raise StageFailed(f"demo: `mambaseg {' '.join(argv)}` failed with status {status}")


def _overlays(images: Path, references: Path, predictions: Path, out_dir: Path, names: list[str]) -> list[Path]:
    """One PNG per case: the slice with most reference foreground, as image, reference and prediction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        image = read_image(next(images.glob(f"{name}_0000.*"))).array
        reference = read_image(next(references.glob(f"{name}.*"))).array
        prediction = read_image(next(predictions.glob(f"{name}.nii.gz"))).array
        z = int(np.argmax((reference > 0).sum(axis=(1, 2))))
        figure, axes = plt.subplots(1, 3, figsize=(9, 3.4))
        for axis, (title, overlay) in zip(
            axes, (("image", None), ("reference", reference), ("prediction", prediction)), strict=True
        ):
            axis.imshow(image[z], cmap="gray")
            if overlay is not None:
                axis.imshow(np.ma.masked_equal(overlay[z], 0), cmap="tab10", alpha=0.5, vmin=0, vmax=9)
            axis.set_title(f"{name} {title}, slice {z}")
            axis.axis("off")
        figure.tight_layout()
        path = out_dir / f"{name}_overlay.png"
        write_atomically(path, lambda handle, figure=figure: figure.savefig(handle, format="png", dpi=80))
        plt.close(figure)
        written.append(path)
    return written


def run(args: argparse.Namespace) -> int:
    console = Console()
    try:
        return _demo(args, console)
    except StageFailed as error:
        return show_error(console, error)


def _demo(args: argparse.Namespace, console: Console) -> int:
    workspace = args.workspace
    if args.dataset is None:
        from mambaseg_datasets.demo import write_demo_dataset

        console.print(Rule("demo dataset"))
        raw = write_demo_dataset(workspace.raw)
        console.print(f"synthetic dataset: {raw}", soft_wrap=True)
    else:
        raw = args.dataset.expanduser().resolve()
    common = [str(raw), "--workspace", str(workspace.root)]
    _stage(console, "check", ["check", *common])
    files = workspace.dataset(load_dataset(raw).name)
    plan_args = ["--network", args.network] if args.network else []
    if not files.plans.is_file() or args.network:
        _stage(console, "plan", ["plan", *common, *plan_args])
    _stage(console, "preprocess", ["preprocess", *common, "-c", args.configuration])
    network = args.network or load_plans(files.plans).configurations[args.configuration].network
    run = files.run(args.configuration, network)
    fold = run.fold(0)
    train_seconds = None
    if not fold.checkpoints.final.is_file():
        train = ["train", *common, "-c", args.configuration, "-f", "0", "-n", network, "trainer=demo", "num_workers=0"]
        if fold.checkpoints.latest.is_file():  # an interrupted demo resumes
            train.append("--continue")
        started = time.perf_counter()
        _stage(console, "train", [*train, *args.overrides])
        train_seconds = time.perf_counter() - started
    else:
        console.print(Rule("train"))
        console.print(f"already trained: {fold.folder}", soft_wrap=True)

    held_out, references = raw / "imagesTs", raw / "labelsTs"
    results = files.demo_results
    if held_out.is_dir() and references.is_dir():
        predictions = results / "predictions"
        _stage(console, "predict", ["predict", "-i", str(held_out), "-o", str(predictions), "-m", str(run.folder)])
        evaluation = results / "evaluation"
        _stage(console, "evaluate", ["evaluate", str(predictions), str(references), "-o", str(evaluation)])
        summary = json.loads(EvaluationFiles.in_folder(evaluation).summary.read_text())
        names = sorted(summary["cases"])[:OVERLAY_CASES]
        overlays = _overlays(held_out, references, predictions, results / "overlays", names)
        scores = {label: values["dice"] for label, values in summary["mean"].items()}
    else:
        summary = json.loads(fold.validation_summary.read_text())
        scores, overlays = {label: values["dice"] for label, values in summary["mean"].items()}, []
    console.print(Rule("result"))
    console.print(_training_line(fold.checkpoints.final, train_seconds), soft_wrap=True)
    _show(console, load_dataset(raw).labels, scores, fold.logs.plot, overlays)
    return 0


def _training_line(final: Path, seconds: float | None) -> str:
    """The epochs trained (of how many, within which budget) and the train stage's wall time (None: trained before)."""
    checkpoint = load_checkpoint(final, map_location="cpu")
    budget = checkpoint.extra.get("time_budget")
    planned = checkpoint.config["trainer"]["num_epochs"] if budget is None else budget["num_epochs"]
    line = f"training: {checkpoint.epoch} of {planned} epochs"
    if budget is not None:
        line += f", time budget {budget['budget_s'] / 60:g} min"
    if seconds is None:
        return f"{line}; trained by an earlier run"
    minutes, rest = divmod(round(seconds), 60)
    return f"{line}; train stage wall time {minutes} min {rest:02d} s (with the fold's final validation)"


def _show(console: Console, labels: dict, scores: dict, curves: Path, overlays: list[Path]) -> None:
    names = {str(value): key for key, value in labels.items()}
    table = Table(title="Dice per structure", title_justify="left")
    table.add_column("structure")
    table.add_column("Dice", justify="right")
    for label, dice in scores.items():
        table.add_row(names.get(str(label), str(label)), "n/a" if dice is None else f"{dice:.3f}")
    console.print(table)
    console.print(f"training curves: {curves}", soft_wrap=True)
    for path in overlays:
        console.print(f"overlay: {path}", soft_wrap=True)
