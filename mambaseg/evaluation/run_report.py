"""A run's reports: one self-contained HTML page per trained fold, and one per dataset after find-best.

A fold's page (``write_fold_report``) shows the plan (configuration, network, spacing, patch, batch, parameters),
the precision the fold trained and validated in and the machine, the training curves of ``metrics.csv``, the
validation scores per case and class (``summary.json``), and overlays of the best and the worst validation case by
mean Dice: the reference and the prediction over the image, on three orthogonal slices through the centre of the
reference's structure (one slice for a case with a single slice). The dataset's page (``write_dataset_report``)
shows what find-best ranked and chose: the ranking, the ensembles, the postprocessing and the cross-validation
scores, and the validation of each ranked run's folds. The workspace layer reads the run's files into
``FoldReport``; a part that cannot be drawn is replaced by a sentence saying why. Pages render through
``mambaseg.evaluation.html`` (no script, no link out) and are written atomically.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mambaseg.data import Case
from mambaseg.evaluation.benchmark_report import METRIC_DECIMALS, METRIC_HEADINGS
from mambaseg.evaluation.html import MISSING, Block, Picture, Section, Table, figure_png, number, render_page
from mambaseg.evaluation.overlays import overlay_png
from mambaseg.evaluation.summary import label_array
from mambaseg.io import read_image
from mambaseg.io.atomic import write_text_atomically


class ReportError(ValueError):
    """A part of a report that cannot be drawn; the message names the file and the reason."""


@dataclass(frozen=True)
class FoldReport:
    """What a fold's page is drawn from; the workspace layer reads the run's files into it.

    Attributes:
        title: the page's title (dataset, run and fold).
        configuration: the configuration trained (``3d_fullres``...).
        plan: the fold's ``plan.json``.
        config: the run's resolved ``config.yaml`` (``precision``: what arithmetic it trained in).
        parameters: the network's parameters, None when unknown.
        machine: ``cpu``, ``device``, ``torch`` and, on CUDA, ``gpu``: where the fold was validated (its
            ``prediction_times.json`` records it), else where the page is drawn.
        metrics: the fold's ``metrics.csv``.
        summary: the validation's ``summary.json``; None before validation.
        times: the validation's ``prediction_times.json``; None when absent.
        cases: the dataset's cases by name, whose images the overlays show.
        notes: what could not be read, said on the page.
    """

    title: str
    configuration: str
    plan: Mapping[str, Any]
    config: Mapping[str, Any]
    parameters: int | None
    machine: Mapping[str, str]
    metrics: Path
    summary: Mapping[str, Any] | None = None
    times: Mapping[str, Any] | None = None
    cases: Mapping[str, Case] = field(default_factory=dict)
    notes: Sequence[str] = ()


def _sizes(values: Sequence[Any] | None, decimals: int | None = None) -> str:
    if not values:
        return MISSING
    return " × ".join(str(v) if decimals is None else f"{float(v):.{decimals}g}" for v in values)


def _parameters(count: int | None) -> str:
    return MISSING if count is None else f"{count:,} ({count / 1e6:.2f} M)"


def _plan_table(report: FoldReport) -> Table:
    plan, config = report.plan, report.config
    planned = plan.get("batch_size")
    batch = config.get("batch_size") or planned
    trainer = config.get("trainer") or {}
    normalization = ", ".join(str(n.get("scheme", MISSING)) for n in plan.get("normalization") or []) or MISSING
    rows = [
        ["configuration", report.configuration],
        ["network", str(plan.get("network", MISSING))],
        ["network arguments", json.dumps(plan.get("network_kwargs") or {}, sort_keys=True)],
        ["parameters", _parameters(report.parameters)],
        ["spacing (mm)", _sizes(plan.get("spacing"), 4)],
        ["median shape (voxels)", _sizes(plan.get("median_shape"), 4)],
        ["patch size", _sizes(plan.get("patch_size"))],
        ["batch size", f"{batch}" + ("" if batch == planned else f" (planned {planned})")],
        ["normalization", normalization],
        ["estimated memory (GB)", number(plan.get("estimated_memory_gb"), 2)],
        [
            "schedule",
            f"{trainer.get('num_epochs', MISSING)} epochs of {trainer.get('iterations_per_epoch', MISSING)} iterations",
        ],
    ]
    if plan.get("previous_stage"):
        rows.append(["previous stage", f"{plan['previous_stage']} (labels {plan.get('previous_stage_labels')})"])
    return Table(["plan", "value"], rows)


def _precision(report: FoldReport) -> list[str]:
    record = report.config.get("precision")
    if isinstance(record, Mapping):
        autocast = record.get("autocast")
        training = f"{autocast} autocast" if autocast else "float32"
        trained = (
            f"training: {training}, memory format {record.get('memory_format', MISSING)}, on {record.get('device')}"
        )
    else:
        trained = "training: not recorded in config.yaml"
    amp = (report.config.get("trainer") or {}).get("amp")
    items = [f"{trained} (trainer.amp={amp})"]
    if report.times:
        seconds = list((report.times.get("seconds") or {}).values())
        mean = number(sum(seconds) / len(seconds), 2) if seconds else MISSING
        items.append(
            f"validation: {report.times.get('precision', MISSING)} on {report.times.get('device', MISSING)}, "
            f"{mean} s per case over {len(seconds)} case(s)"
        )
    recorded = (report.times or {}).get("machine")
    machine = recorded or report.machine
    drawn = f"CPU {machine.get('cpu', MISSING)}; torch {machine.get('torch', MISSING)}"
    if machine.get("gpu"):
        drawn += f"; GPU {machine['gpu']}"
    where = "machine the fold was validated on" if recorded else "machine this report was drawn on"
    items.append(f"{where} ({machine.get('device', MISSING)}): {drawn}")
    return items


def read_metrics(path: Path) -> dict[str, list[float]]:
    """The columns of a ``metrics.csv`` as numbers (a cell that is not one as NaN).

    Raises:
        ReportError: no such file, or a file without a row.
    """
    if not path.is_file():
        raise ReportError(f"{path}: no training metrics (the fold has not finished an epoch)")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ReportError(f"{path}: no epoch recorded")

    def value(cell: str | None) -> float:
        try:
            return float(cell or "nan")
        except ValueError:
            return math.nan

    return {column: [value(row.get(column)) for row in rows] for column in rows[0]}


def curves_png(columns: Mapping[str, Sequence[float]]) -> bytes:
    """Losses, the pseudo Dice (per class, mean and moving average) and the learning rate against the epoch."""
    epochs = columns.get("epoch") or list(range(len(next(iter(columns.values())))))
    panels = [
        ("loss", [k for k in columns if k.endswith("loss")]),
        ("pseudo Dice", [k for k in columns if k in ("mean_dice", "ema_dice") or k.startswith("dice_")]),
        ("learning rate", [k for k in columns if k == "lr"]),
    ]
    panels = [(label, keys) for label, keys in panels if any(not all(map(math.isnan, columns[k])) for k in keys)]
    figure = Figure(figsize=(5.0 * max(1, len(panels)), 3.6), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, max(1, len(panels)), squeeze=False).ravel()
    for ax, (label, keys) in zip(axes, panels, strict=False):
        for key in keys:
            style = {"ema_dice": "-", "mean_dice": ":"}.get(key, "-")
            width = 0.8 if key.startswith("dice_") else 1.6
            ax.plot(epochs, columns[key], ls=style, lw=width, marker="." if len(epochs) < 20 else None, label=key)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    figure.tight_layout()
    return figure_png(figure)


def _training(columns: Mapping[str, Sequence[float]]) -> list[str]:
    items = [f"epochs: {len(next(iter(columns.values())))}"]
    ema = columns.get("ema_dice")
    if ema and not all(map(math.isnan, ema)):
        best = int(np.nanargmax(ema))
        epoch = int(columns["epoch"][best]) if "epoch" in columns else best
        items.append(f"best pseudo Dice (moving average): {ema[best]:.4f} at epoch {epoch}")
    times = [t for t in columns.get("epoch_time", []) if not math.isnan(t)]
    if times:
        total = sum(times)
        spent = (
            f"{total:.0f} s" if total < 120 else f"{total / 60:.1f} min" if total < 7200 else f"{total / 3600:.1f} h"
        )
        items.append(f"training time: {spent} ({total / len(times):.1f} s per epoch)")
    return items


def _label_name(summary: Mapping[str, Any], label: str) -> str:
    name = summary.get("label_names", {}).get(label)
    return f"{name} ({label})" if name else label


def _scores(values: Mapping[str, Any], metrics: Sequence[str]) -> list[str]:
    return [number(values.get(metric), METRIC_DECIMALS[metric]) for metric in metrics]


def case_mean_dice(summary: Mapping[str, Any]) -> dict[str, float]:
    """Each validation case's mean Dice over its classes with a value; cases without one left out."""
    means = {}
    for name, case in summary["cases"].items():
        values = [s.get("dice") for s in case["metrics"].values()]
        values = [v for v in values if v is not None and not math.isnan(v)]
        if values:
            means[name] = sum(values) / len(values)
    return means


def _validation(summary: Mapping[str, Any]) -> list[Block]:
    metrics = [m for m in summary["metrics"] if m in METRIC_HEADINGS]
    headings = [METRIC_HEADINGS[m] for m in metrics]
    means = [[_label_name(summary, label), *_scores(values, metrics)] for label, values in summary["mean"].items()]
    means.append(["foreground mean", *_scores(summary["foreground_mean"], metrics)])
    mean_dice = case_mean_dice(summary)
    rows = []
    for name, case in summary["cases"].items():
        for label, values in case["metrics"].items():
            rows.append([name, _label_name(summary, label), *_scores(values, metrics), number(mean_dice.get(name), 3)])
    return [
        f"{len(summary['cases'])} validation case(s); means over cases, classes absent from both masks left out.",
        Table(["class", *headings], means),
        "Per case and class:",
        Table(["case", "class", *headings, "case mean Dice"], rows),
    ]


def _case_overlay(report: FoldReport, name: str, title: str) -> Block:
    """The overlay picture of a validation case, or the sentence saying why it cannot be drawn."""
    summary = report.summary or {}
    entry = summary["cases"][name]
    try:
        case = report.cases.get(name)
        if case is None:
            raise ReportError(f"case {name!r}: not among the dataset's cases ({summary.get('reference') or MISSING})")
        image = case.load_images()[0]
        reference = label_array(read_image(Path(entry["reference_file"])))
        prediction = label_array(read_image(Path(entry["prediction_file"])))
        if not image.array.shape == reference.shape == prediction.shape:
            raise ReportError(
                f"{entry['prediction_file']}: shape {prediction.shape}, the reference {reference.shape} and the image "
                f"{image.array.shape} differ"
            )
    except (OSError, ValueError) as error:  # a moved dataset, a deleted mask, an unreadable file
        return f"{title}: not drawn: {error}"
    picture = overlay_png(image, reference, prediction, title, summary.get("label_names", {}))
    return Picture(f"{title}: reference and prediction over the image", picture)


def _overlays(report: FoldReport) -> list[Block]:
    means = case_mean_dice(report.summary or {})
    if not means:
        return ["No validation case has a Dice to rank it by."]
    best, worst = max(means, key=means.__getitem__), min(means, key=means.__getitem__)
    if best == worst:
        return [_case_overlay(report, best, f"{best} (the only case ranked), mean Dice {means[best]:.3f}")]
    return [
        _case_overlay(report, best, f"best: {best}, mean Dice {means[best]:.3f}"),
        _case_overlay(report, worst, f"worst: {worst}, mean Dice {means[worst]:.3f}"),
    ]


def fold_sections(report: FoldReport) -> list[Section]:
    """The fold page's sections: plan, precision and machine, training, validation, overlays, notes."""
    sections = [
        Section("Plan", [_plan_table(report)]),
        Section("Precision and machine", [_precision(report)]),
    ]
    try:
        columns = read_metrics(report.metrics)
        training: list[Block] = [_training(columns), Picture("training curves", curves_png(columns))]
    except (OSError, ReportError) as error:
        training = [str(error)]
    sections.append(Section("Training", training))
    if report.summary is None:
        sections.append(Section("Validation", ["Not validated yet (no validation/summary.json)."]))
    else:
        sections.append(Section("Validation", _validation(report.summary)))
        sections.append(Section("Best and worst validation cases", _overlays(report)))
    if report.notes:
        sections.append(Section("Notes", [list(report.notes)]))
    return sections


def write_fold_report(report: FoldReport, path: Path) -> Path:
    """Write the fold's page to ``path`` atomically; returns ``path``."""
    write_text_atomically(path, render_page(report.title, fold_sections(report)))
    return path


def _postprocessing(steps: Sequence[Mapping[str, Any]], label_names: Mapping[str, str]) -> list[str]:
    if not steps:
        return ["postprocessing: none (none improves the cross-validation Dice)"]
    described = []
    for step in steps:
        names = ", ".join(label_names.get(str(label), str(label)) for label in step["labels"])
        together = " together" if step.get("jointly") and len(step["labels"]) > 1 else ""
        described.append(f"postprocessing: keep the largest connected component of {names}{together}")
    return described


def _ranking_png(ranking: Sequence[Mapping[str, Any]]) -> bytes:
    names = [entry["candidate"] for entry in ranking][::-1]
    values = [entry["mean_dice"] if entry["mean_dice"] is not None else math.nan for entry in ranking][::-1]
    figure = Figure(figsize=(8.0, 1.2 + 0.4 * len(names)), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    ax.barh(range(len(names)), values, color=["#9ecae1"] * (len(names) - 1) + ["#3182bd"])
    ax.set_yticks(range(len(names)), names, fontsize="small")
    ax.set_xlim(0, 1)
    ax.set_xlabel("cross-validation mean Dice")
    ax.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    return figure_png(figure)


def dataset_sections(
    instructions: Mapping[str, Any],
    label_names: Mapping[str, str],
    folds: Mapping[str, Mapping[int, Mapping[str, Any] | None]],
) -> list[Section]:
    """The dataset page's sections; see ``write_dataset_report`` for the arguments."""
    ranking, scores = instructions["ranking"], instructions["cross_validation"]
    classes = list(scores.get("dice_per_class") or {})
    runs = instructions["runs"]
    chosen = [
        f"{'ensemble of ' if len(runs) > 1 else 'run '}{' + '.join(runs)}",
        f"folds: {', '.join(str(f) for f in instructions['folds'])}",
        *_postprocessing(instructions.get("postprocessing") or [], label_names),
        f"cross-validation over {scores.get('cases', MISSING)} case(s): mean Dice "
        + f"{number(scores.get('mean_dice'), 4)}, after postprocessing "
        + number(scores.get("mean_dice_postprocessed"), 4),
    ]
    per_class = Table(
        ["class", "Dice", "Dice after postprocessing"],
        [
            [
                label_names.get(c, c),
                number(scores["dice_per_class"].get(c), 4),
                number((scores.get("dice_per_class_postprocessed") or {}).get(c), 4),
            ]
            for c in classes
        ],
    )
    rows = [
        [
            str(entry["rank"]),
            entry["candidate"],
            "ensemble" if len(entry["runs"]) > 1 else "run",
            number(entry["mean_dice"], 4),
            *(number(entry["dice_per_class"].get(c), 4) for c in classes),
        ]
        for entry in ranking
    ]
    ranked = Table(["rank", "candidate", "kind", "mean Dice", *(label_names.get(c, c) for c in classes)], rows)
    ensembles = [entry["candidate"] for entry in ranking if len(entry["runs"]) > 1]
    ensemble_blocks: list[Block] = [
        f"{len(ensembles)} ensemble(s) ranked: {', '.join(ensembles)}." if ensembles else "No ensemble was ranked."
    ]
    skipped = instructions.get("skipped") or []
    if skipped:
        ensemble_blocks += [
            "Left out:",
            Table(["candidate", "reason"], [[s["candidate"], s["reason"]] for s in skipped]),
        ]
    fold_rows = []
    for run, by_fold in folds.items():
        for fold, summary in by_fold.items():
            if not summary or "foreground_mean" not in summary:
                fold_rows.append([run, str(fold), MISSING, MISSING, MISSING, MISSING])
                continue
            means = summary["foreground_mean"]
            fold_rows.append([run, str(fold), str(len(summary["cases"])), *_scores(means, list(METRIC_DECIMALS))])
    return [
        Section("Chosen", [chosen, per_class]),
        Section("Ranking", [ranked, Picture("cross-validation mean Dice per candidate", _ranking_png(ranking))]),
        Section("Ensembles", ensemble_blocks),
        Section(
            "Validation of the ranked runs' folds",
            [Table(["run", "fold", "cases", *METRIC_HEADINGS.values()], fold_rows)],
        ),
    ]


def write_dataset_report(
    instructions: Mapping[str, Any],
    label_names: Mapping[str, str],
    folds: Mapping[str, Mapping[int, Mapping[str, Any] | None]],
    path: Path,
) -> Path:
    """Write the dataset's page of what find-best chose to ``path`` atomically; returns ``path``.

    Args:
        instructions: ``inference_instructions.json`` (``InferenceInstructions.to_dict()``).
        label_names: class key as in ``dice_per_class`` (``"1"``, ``"(1, 2)"``) -> name.
        folds: run (as the instructions name it) -> fold -> its validation summary (None where unreadable).
        path: where the page goes.
    """
    title = f"{instructions['dataset']}: find-best"
    write_text_atomically(path, render_page(title, dataset_sections(instructions, label_names, folds)))
    return path
