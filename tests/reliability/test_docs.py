"""The documentation keeps up with the code: every CLI option is in docs/cli.md, every catalogued test exists."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from mambaseg.cli.main import build_parser

REPO = Path(__file__).resolve().parents[2]


def test_every_command_and_option_is_in_the_cli_reference():
    text = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for name, sub in commands.choices.items():
        if f"## {name}\n" not in text:
            missing.append(name)
        for action in sub._actions:
            missing += [f"{name} {o}" for o in action.option_strings if o not in ("-h", "--help") and o not in text]
    assert missing == []


def test_every_test_the_reliability_catalogue_names_exists():
    text = (REPO / "docs" / "reliability.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(?:(tests/[\w/]+\.py)::|([\w]+\.py)::)?(test_\w+)\b(?!\.)", text))
    assert len(named) >= 20
    sources = {path: path.read_text(encoding="utf-8") for path in (REPO / "tests").rglob("test_*.py")}
    for folder_file, local_file, test in named:
        where = [p for p in sources if p == REPO / folder_file or p.name == local_file] or list(sources)
        assert any(f"def {test}(" in sources[p] for p in where), (folder_file or local_file, test)
    for parameter in re.findall(r"`\[(\w+)\]`", text):
        assert f'"{parameter}":' in sources[REPO / "tests" / "reliability" / "test_dataset_faults.py"], parameter
