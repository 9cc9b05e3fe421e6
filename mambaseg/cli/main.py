"""The ``mambaseg`` command: a thin shell that parses arguments and calls the stages.

Each command lives in its own module under ``mambaseg.cli`` with two functions::

    add_arguments(parser: argparse.ArgumentParser) -> None
    run(args: argparse.Namespace) -> int        # the exit status

and is listed in ``COMMANDS`` (command name -> module name).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

import numpy as np
from rich.console import Console
from rich.text import Text

from mambaseg.workspace.layout import DEFAULT_WORKSPACE, WORKSPACE_ENV, LayoutError, resolve_workspace

COMMANDS: dict[str, str] = {
    "demo": "cmd_demo",
    "benchmark": "cmd_benchmark",
    "check": "cmd_check",
    "convert": "cmd_convert",
    "ensemble": "cmd_ensemble",
    "evaluate": "cmd_evaluate",
    "export-model": "cmd_export_model",
    "find-best": "cmd_find_best",
    "fingerprint": "cmd_fingerprint",
    "plan": "cmd_plan",
    "predict": "cmd_predict",
    "preprocess": "cmd_preprocess",
    "pretrain": "cmd_pretrain",
    "report": "cmd_report",
    "train": "cmd_train",
}


def add_dataset_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dataset", help="dataset folder (nnU-Net v2 or Decathlon layout), or its name under WORKSPACE/raw"
    )


def without_option(argv: Sequence[str], option: str) -> list[str]:
    """The arguments minus ``OPTION VALUE`` / ``OPTION=VALUE``."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(f"{option}="):
            kept.append(arg)
    return kept


def add_workspace_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workspace",
        help=f"folder for fingerprints, plans, preprocessed data and runs (default: ${WORKSPACE_ENV} or "
        f"./{DEFAULT_WORKSPACE})",
    )


class ArgumentError(Exception):
    """A command line that does not parse; its message is the one line shown."""


class CommandLineParser(argparse.ArgumentParser):
    """An argument parser whose mistakes end as every other error does: one ``error:`` line and exit status 1.

    ``--help`` still prints the usage and exits 0; a bad argument raises ``ArgumentError``, which ``main`` shows.
    """

    def error(self, message: str) -> NoReturn:
        raise ArgumentError(f"{self.prog}: {message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = CommandLineParser(prog="mambaseg", description="Self-configuring segmentation with Mamba networks.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"mambaseg.cli.{module_name}")
        sub = commands.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    """The parsed command line; ``ArgumentError`` for one that does not parse."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides may follow options; anything else is an error
        unknown = [a for a in extra if a.startswith("-") or "=" not in a]
        if unknown or not hasattr(args, "overrides"):
            parser.error(f"unrecognized arguments: {' '.join(unknown or extra)}")
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_arguments(argv)
    except ArgumentError as error:
        Console().print(Text(f"error: {error}", style="bold red"), soft_wrap=True)
        return 1
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    np.set_printoptions(legacy="1.25")  # messages show numbers as 50.0, not np.float64(50.0)
    if hasattr(args, "workspace"):  # resolved once, here: a Workspace from here on
        try:
            args.workspace = resolve_workspace(args.workspace)
        except LayoutError as error:
            Console().print(Text(f"error: {error}", style="bold red"), soft_wrap=True)
            return 1
    try:
        return args.run(args)
    except KeyboardInterrupt:  # partial files are removed by the atomic writers on the way out
        Console().print(Text("interrupted", style="bold red"))
        return 130
    except Exception as error:  # an unforeseen failure: one line, the traceback with -v
        if args.verbose:
            raise
        message = f"{type(error).__name__}: {' '.join(str(error).split())} (run with -v for the traceback)"
        Console().print(Text(f"error: {message}", style="bold red"), soft_wrap=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
