"""The layer rule of docs/architecture.md (see docs/contributing.md): each layer imports only from the layers above."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# top to bottom, as docs/architecture.md lists them; the kernels package is the first layer
LAYERS = [
    "mambaseg_kernels",
    "ops",
    "nn",
    "networks",
    "io",
    "data",
    "planning",
    "preprocessing",
    "training",
    "inference",
    "pretraining",
    "evaluation",
    "workspace",
    "cli",
]
# pairs the table forbids although they are in order
FORBIDDEN = {("inference", "training"), ("evaluation", "training")}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "mambaseg_kernels":
        return "mambaseg_kernels"
    if parts[0] == "mambaseg" and len(parts) > 1 and parts[1] in LAYERS:
        return parts[1]
    return None


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module == "mambaseg":  # from mambaseg import workspace
            found += [(node.lineno, f"mambaseg.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _sources() -> list[tuple[str, Path]]:
    files = [("mambaseg_kernels", p) for p in (ROOT / "kernels" / "mambaseg_kernels").rglob("*.py")]
    for layer in LAYERS[1:]:
        files += [(layer, p) for p in (ROOT / "mambaseg" / layer).rglob("*.py")]
    return files


def upward_imports() -> list[str]:
    """``file:line imports module`` for every import of a layer listed below the file's own, or forbidden."""
    problems = []
    for layer, path in _sources():
        for line, module in _imports(path):
            target = _layer(module)
            if target is None or target == layer:
                continue
            if LAYERS.index(target) > LAYERS.index(layer) or (layer, target) in FORBIDDEN:
                problems.append(f"{path.relative_to(ROOT)}:{line} ({layer}) imports {module} ({target})")
    return sorted(set(problems))


def test_no_module_imports_a_layer_below_its_own():
    assert upward_imports() == []


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    fake = tmp_path / "mambaseg" / "io"
    fake.mkdir(parents=True)
    source = "from mambaseg.training.run import train_fold\nimport mambaseg.io.atomic\nfrom mambaseg import cli\n"
    (fake / "bad.py").write_text(source)
    (tmp_path / "kernels" / "mambaseg_kernels").mkdir(parents=True)
    monkeypatch.setattr("tests.test_layers.ROOT", tmp_path)
    assert upward_imports() == [
        "mambaseg/io/bad.py:1 (io) imports mambaseg.training.run (training)",
        "mambaseg/io/bad.py:3 (io) imports mambaseg.cli (cli)",
    ]


@pytest.mark.parametrize("layer", LAYERS[1:])
def test_every_layer_is_a_package(layer):
    assert (ROOT / "mambaseg" / layer / "__init__.py").is_file()
