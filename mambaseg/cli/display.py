"""What the commands show: errors as one line, tables of check problems and plans."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from mambaseg.data import CheckReport, Dataset
from mambaseg.planning.plans import Plans

_STYLES = {"error": "bold red", "warning": "yellow"}


def show_error(console: Console, error: BaseException | str) -> int:
    """``error: ...`` in red; the exit status 1."""
    console.print(Text(f"error: {error}", style=_STYLES["error"]), soft_wrap=True)
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
