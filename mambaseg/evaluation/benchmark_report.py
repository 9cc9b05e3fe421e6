"""The benchmark's report: ``results.json``, ``results.csv``, a box plot, and the same document in Markdown and HTML.

``write_report`` takes the content built by ``build_results`` (``mambaseg.evaluation.benchmark_results``, whose
public names this module re-exports) and writes every file atomically. The report answers "does a network beat the
baseline on this data, and at what cost?": the verdict, the machine and the budget, the intervals of Dice, HD95 and
NSD per class and per case, the paired tests against the baseline, the measured costs, the notes and the box plot.
The HTML stands alone: inline style, the plot inline as a ``data:`` URI, no script and no link out.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mambaseg.evaluation.benchmark_results import (
    RESULTS_SCHEMA_VERSION,
    CaseScore,
    RunCosts,
    build_results,
    class_dice,
    mean_dice_by_case,
)
from mambaseg.evaluation.html import MISSING, Picture, Section, Table, escape, figure_png, number, render_page
from mambaseg.evaluation.html import STYLE as PAGE_STYLE
from mambaseg.io.atomic import write_atomically, write_text_atomically

__all__ = ["RESULTS_SCHEMA_VERSION", "BenchmarkReportPaths", "CaseScore", "RunCosts", "build_results", "write_report"]

CSV_HEADER = ("contestant", "fold", "case", "class", "dice", "hd95", "nsd")
METRIC_HEADINGS = {"dice": "Dice", "hd95": "HD95 (mm)", "nsd": "NSD"}
METRIC_DECIMALS = {"dice": 3, "hd95": 2, "nsd": 3}
COMPARISONS_HEADING = "Comparisons with the baseline"
COSTS_HEADING = "Costs"
STYLE = PAGE_STYLE + ".verdict { font-size: 1.15em; font-weight: bold; }\n"


class BenchmarkReportPaths(Protocol):
    """Where ``write_report`` writes; the workspace layer names the files."""

    @property
    def results(self) -> Path: ...  # results.json

    @property
    def table(self) -> Path: ...  # results.csv

    @property
    def boxplot(self) -> Path: ...  # the box plot (PNG)

    @property
    def markdown(self) -> Path: ...  # report.md

    @property
    def html(self) -> Path: ...  # report.html


@dataclass(frozen=True)
class Plot:
    """The box plot, with its alternative text."""

    alt: str


def _interval(interval: Mapping[str, Any], decimals: int) -> str:
    if interval["mean"] is None:
        return MISSING
    text = number(interval["mean"], decimals)
    if interval["low"] is None or interval["high"] is None:
        return text
    return f"{text} [{number(interval['low'], decimals)}, {number(interval['high'], decimals)}]"


def _p(value: float | None) -> str:
    if value is None:
        return MISSING
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _signed(value: float | None, decimals: int) -> str:
    return MISSING if value is None else f"{value:+.{decimals}f}"


def _count(value: float | None) -> str:
    if value is None:
        return MISSING
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def _name(results: Mapping[str, Any], contestant: str) -> str:
    return f"{contestant} (baseline)" if contestant == results["baseline"] else contestant


def _scores_table(results: Mapping[str, Any], metric: str) -> Table:
    decimals = METRIC_DECIMALS[metric]
    rows = []
    for name in results["contestants"]:
        entry = results["scores"][name]
        cells = [_interval(entry["classes"][label][metric], decimals) for label in results["classes"]]
        rows.append(
            [_name(results, name), *cells, _interval(entry["case_mean"][metric], decimals), str(entry["cases"])]
        )
    return Table(["network", *results["classes"], "case mean", "cases"], rows)


def _comparisons_table(results: Mapping[str, Any]) -> Table:
    rows = [
        [
            name,
            str(c["cases"]),
            str(c["n"]),
            _signed(c["mean_difference"], 3),
            _signed(c["median_difference"], 3),
            _signed(c["effect_size"], 2),
            _p(c["p_value"]),
            _p(c["p_holm"]),
            "yes" if c["significant"] else "no",
        ]
        for name, c in results["comparisons"].items()
    ]
    header = ["network", "cases", "differing", "mean difference", "median difference", "effect size", "p", "Holm p"]
    header.append("significant")
    return Table(header, rows)


def _agreed(values: Sequence[str]) -> str:
    """The value every fold shares, or the distinct values joined."""
    distinct = list(dict.fromkeys(values))
    return " / ".join(distinct) if distinct else MISSING


def _costs_table(results: Mapping[str, Any]) -> Table:
    rows = []
    for name in results["contestants"]:
        folds, mean = results["costs"][name]["folds"].values(), results["costs"][name]["mean"]
        parameters = mean["parameters"]
        rows.append(
            [
                _name(results, name),
                MISSING if parameters is None else f"{parameters / 1e6:.2f} M",
                _agreed(["×".join(str(s) for s in run["patch_size"]) for run in folds]),
                _agreed([str(run["batch_size"]) for run in folds]),
                _agreed([run["precision"] for run in folds]),
                _count(mean["epochs"]),
                _count(mean["samples"]),
                number(mean["samples_per_second"], 1),
                number(mean["seconds_per_epoch"], 1),
                number(mean["peak_memory_mb"], 0),
                number(mean["inference_seconds_per_case"], 2),
            ]
        )
    header = ["network", "parameters", "patch", "batch", "precision", "epochs", "samples", "samples/s", "s/epoch"]
    return Table([*header, "peak memory MB", "inference s/case"], rows)


def _budget(budget: Mapping[str, Any]) -> str:
    if budget.get("kind") == "minutes":
        return f"{budget.get('minutes')} minutes of training per fold ({budget.get('epochs')} epochs at most)"
    return (
        f"{budget.get('epochs')} epochs of {budget.get('iterations_per_epoch')} iterations at batch "
        f"{budget.get('batch_size')} per fold ({_count(budget.get('samples'))} samples)"
    )


def _setup(results: Mapping[str, Any]) -> list[str]:
    info, machine, bootstrap = results["benchmark"], results["benchmark"].get("machine", {}), results["bootstrap"]
    return [
        f"CPU: {machine.get('cpu', MISSING)}",
        f"device: {machine.get('device', MISSING)}",
        f"torch: {machine.get('torch', MISSING)}",
        f"precision: {machine.get('precision', MISSING)}",
        f"budget: {_budget(info.get('budget', {}))}",
        f"folds: {', '.join(info.get('folds', [])) or MISSING}",
        f"created: {info.get('created', MISSING)}",
        f"command: {info.get('command', MISSING)}",
        f"intervals: {bootstrap['confidence']:.0%} percentile bootstrap over cases, {bootstrap['resamples']} "
        f"resamples, seed {bootstrap['seed']}",
    ]


def title(results: Mapping[str, Any]) -> str:
    """The report's title: the benchmark's name, its dataset and configuration."""
    info = results["benchmark"]
    return f"Benchmark {info.get('name', '')}: {info.get('dataset', '')} ({info.get('configuration', '')})"


def document(results: Mapping[str, Any]) -> list[Section]:
    """The report's sections, rendered alike as Markdown and HTML; the verdict comes before them."""
    baseline = results["baseline"]
    confidence = results["bootstrap"]["confidence"]
    scores = f"Mean over cases [{confidence:.0%} interval]; the case mean averages each case's classes with a value."
    sections = [Section("Machine and budget", [_setup(results)])]
    sections += [
        Section(heading, [scores, _scores_table(results, metric)]) for metric, heading in METRIC_HEADINGS.items()
    ]
    explanation = (
        f"Wilcoxon signed-rank test of each network's per-case mean Dice against {baseline}'s on the cases both "
        "have (it ranks the differing ones, ties left out); differences are network minus baseline; effect size is "
        "the matched-pairs rank-biserial correlation; Holm p corrects for all comparisons; significant at α 0.05."
    )
    sections.append(Section(COMPARISONS_HEADING, [explanation, _comparisons_table(results)]))
    costs = "Means over folds, measured in this benchmark on this machine; memory is the training process's peak."
    sections.append(Section(COSTS_HEADING, [costs, _costs_table(results)]))
    notes = [*results["benchmark"].get("notes", []), *results["notes"]]
    sections.append(Section("Notes", [notes if notes else "None."]))
    plot = Plot(f"per-case mean Dice per network, {baseline} (baseline) first")
    sections.append(Section("Per-case Dice", [plot]))
    return sections


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(results: Mapping[str, Any], sections: Sequence[Section], image: str) -> str:
    """The report as Markdown; ``image`` is the box plot's file name relative to the report."""
    lines = [f"# {title(results)}", "", f"**{results['verdict']}**", ""]
    for section in sections:
        lines += [f"## {section.heading}", ""]
        for block in section.blocks:
            if isinstance(block, Table):
                lines.append("| " + " | ".join(_markdown_cell(c) for c in block.header) + " |")
                lines.append("|" + "|".join(["---"] + ["---:"] * (len(block.header) - 1)) + "|")
                lines += ["| " + " | ".join(_markdown_cell(c) for c in row) + " |" for row in block.rows]
            elif isinstance(block, Plot):
                lines.append(f"![{block.alt}]({image})")
            elif isinstance(block, list):
                lines += [f"- {item}" for item in block]
            else:
                lines.append(block)
            lines.append("")
    return "\n".join(lines)


def render_html(results: Mapping[str, Any], sections: Sequence[Section], png: bytes) -> str:
    """The report as one self-contained HTML page, the box plot inline."""
    pictured = [
        Section(s.heading, [Picture(b.alt, png) if isinstance(b, Plot) else b for b in s.blocks]) for s in sections
    ]
    verdict = f'<p class="verdict">{escape(results["verdict"])}</p>'
    return render_page(title(results), pictured, STYLE, [verdict])


def results_csv(results: Mapping[str, Any]) -> str:
    """``results.csv``: one row per case score, an empty cell where a value is not defined."""
    rows = io.StringIO(newline="")
    writer = csv.writer(rows, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for row in results["case_scores"]:
        values = [row[key] for key in ("contestant", "fold", "case", "label", "dice", "hd95", "nsd")]
        writer.writerow(["" if value is None else value for value in values])
    return rows.getvalue()


def boxplot_png(results: Mapping[str, Any]) -> bytes:
    """Box plots of the per-case mean Dice of every network, then of each class's Dice; the baseline first, shaded."""
    baseline = results["baseline"]
    order = [baseline, *(name for name in results["contestants"] if name != baseline)]
    panels = [("per-case mean Dice", mean_dice_by_case(results))]
    panels += [(f"Dice: {label}", class_dice(results, label)) for label in results["classes"]]
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(columns * max(4.0, 1.1 * len(order) + 1.5), 4.0 * rows), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, (heading, values) in zip(axes, panels, strict=False):
        boxes = ax.boxplot([values[name] for name in order], patch_artist=True, widths=0.6)
        for box, name in zip(boxes["boxes"], order, strict=True):
            box.set_facecolor("#bbbbbb" if name == baseline else "#9ecae1")
        ax.set_xticks(range(1, len(order) + 1), [_name(results, name) for name in order], rotation=20, ha="right")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(heading)
        ax.set_ylabel("Dice")
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    figure.tight_layout()
    return figure_png(figure)


def write_report(results: Mapping[str, Any], files: BenchmarkReportPaths) -> None:
    """Write ``results.json``, ``results.csv``, the box plot PNG, ``report.md`` and ``report.html``, each atomically.

    Args:
        results: the content built by ``build_results``.
        files: where each file goes; their folder must exist.

    Raises:
        ValueError: ``results`` holds a NaN or an infinity, which JSON cannot carry.
    """
    data = (json.dumps(results, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
    png = boxplot_png(results)
    sections = document(results)
    write_atomically(files.results, lambda handle: handle.write(data))
    write_text_atomically(files.table, results_csv(results))
    write_atomically(files.boxplot, lambda handle: handle.write(png))
    write_text_atomically(files.markdown, render_markdown(results, sections, files.boxplot.name))
    write_text_atomically(files.html, render_html(results, sections, png))
