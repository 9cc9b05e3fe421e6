"""What the commands show: errors as one line, tables of check problems and plans."""

from __future__ import annotations

import re
from collections.abc import Mapping

from rich.console import Console
from rich.table import Table
from rich.text import Text

from mambaseg.data import CheckReport, Dataset
from mambaseg.planning.plans import Plans

_STYLES = {"error": "bold red", "warning": "yellow"}


def show_error(console: Console, error: BaseException | str, flags: Mapping[str, str] | None = None) -> int:
    """``error: ...`` in red, with the library's parameter names given as the command's ``flags``; exit status 1.

    Args:
        console: where to print.
        error: the error (its message names the file and the parameter at fault).
        flags: parameter name -> the command's option, e.g. ``{"continue_training": "--continue"}``.
    """
    message = str(error)
    for parameter, flag in (flags or {}).items():
        message = re.sub(rf"\b{re.escape(parameter)}\b", flag, message)
    console.print(Text(f"error: {message}", style=_STYLES["error"]), soft_wrap=True)
    return 1


def show_report(console: Console, dataset: Dataset, report: CheckReport) -> None:
    """A table of the problems (files relative to the dataset folder) and a summary line."""
    if report.problems:
        table = Table(title=f"{dataset.name} ({dataset.layout} layout)", title_justify="left")
        table.add_column("severity")
        table.add_column("file", overflow="fold")
        table.add_column("problem", overflow="fold")
        for problem in report.problems:
            table.add_row(
                Text(problem.severity, style=_STYLES[problem.severity]),
                Text(report.display_path(problem.file)),
                Text(problem.message),
            )
        console.print(table)
    summary = f"{report.n_cases} cases, {len(report.errors)} errors, {len(report.warnings)} warnings: {report.root}"
    console.print(Text(summary, style="bold red" if report.errors else "bold green"), soft_wrap=True)


def show_plans(console: Console, plans: Plans) -> None:
    """The configurations of the plans as a table."""
    table = Table(title=f"{plans.dataset_name}: plans for {plans.gpu_memory_gb:g} GB", title_justify="left")
    for column in ("configuration", "network", "spacing", "patch", "batch", "memory GB"):
        table.add_column(column)
    for name, cfg in plans.configurations.items():
        spacing = " x ".join(f"{s:.3g}" for s in cfg.spacing)
        patch = " x ".join(str(p) for p in cfg.patch_size)
        table.add_row(name, cfg.network, spacing, patch, str(cfg.batch_size), f"{cfg.estimated_memory_gb:.2f}")
    console.print(table)
