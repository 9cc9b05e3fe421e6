"""The wheel, installed into a new venv, runs plan, train and predict from a folder outside the source tree.

This is the test that a plain ``pip install`` of mambaseg works without the checkout: the configs must ship in
the wheel, and nothing may be found through the source tree (no PYTHONPATH, another working directory). On Linux
x86-64 the wheel carries the CPU kernel prebuilt for every level, and the installed scan runs it with no compiler.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import sys
import zipfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

from mambaseg_kernels.cpu import ISA_LEVELS, PREBUILT_RECORD, prebuilt_name, select_isa_level
from tests.data.synthetic import read_nifti_array, write_nnunet_dataset

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "setup.py", "README.md", "mambaseg", "kernels", "datasets", "configs")
TORCH = "torch==2.13.0"
SHAPE = (8, 12, 12)
TRAIN = [
    "-c",
    "3d_fullres",
    "-n",
    "unet_resenc",
    "-f",
    "0",
    "--device",
    "cpu",
    "--workers",
    "1",
    "trainer=cpu_short",
    "trainer.num_epochs=1",
    "trainer.iterations_per_epoch=2",
    "trainer.val_iterations=1",
    "trainer.checkpoint_every=1",
    "num_workers=0",
]
STEP_TIMEOUT_S = 600
PREBUILT = sys.platform == "linux" and platform.machine().lower() in ("x86_64", "amd64")
# The installed scan, with no compiler to be found: the compiled cpu backend runs and matches the reference.
SCAN_WITHOUT_COMPILER = """
import torch
from mambaseg.ops import selective_scan
from mambaseg_kernels.cpu import load_cpu_kernels
from mambaseg_kernels.ops import runs_as
torch.manual_seed(0)
u, delta, z = torch.randn(2, 4, 33), torch.rand(2, 4, 33), torch.randn(2, 4, 33)
A, B, C, D = -torch.rand(4, 8), torch.randn(2, 8, 33), torch.randn(2, 8, 33), torch.randn(4)
args = (u, delta, A, B, C, D, z)
out = selective_scan(*args, delta_softplus=True, backend="cpu")
torch.testing.assert_close(out, selective_scan(*args, delta_softplus=True, backend="reference"), rtol=1e-4, atol=1e-5)
print(runs_as("cpu"), load_cpu_kernels().__name__)
"""


def _environment() -> dict[str, str]:
    """This process's environment without the variables that could find mambaseg in the source tree."""
    return {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}


def _pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
    except OSError:
        return False
    return True


def _completed(command: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """``command`` run in ``cwd`` without the source tree on the path, its output captured as text."""
    return subprocess.run(
        command,
        cwd=cwd,
        env={**_environment(), **env},
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=STEP_TIMEOUT_S,
        check=False,
    )


def _run(command: list[str], cwd: Path, **env: str) -> str:
    result = _completed(command, cwd, **env)
    if result.returncode != 0:
        output = f"{result.stdout[-4000:]}{result.stderr[-4000:]}"
        pytest.fail(f"`{' '.join(command)}` exited {result.returncode}:\n{output}")
    return result.stdout


def _pip_install(python: Path, cwd: Path, *args: str) -> None:
    """``pip install ARGS`` into the venv; skips, outside CI, when neither PyPI nor the pip cache can serve it."""
    command = [str(python), "-m", "pip", "install", "--quiet", "--no-input", "--disable-pip-version-check", *args]
    result = _completed(command, cwd)
    if result.returncode == 0:
        return
    output = f"{result.stdout[-3000:]}{result.stderr[-3000:]}"
    if os.environ.get("CI") != "true" and not _pypi_reachable():
        pytest.skip(f"no network access to PyPI and the pip cache lacks what `pip install {' '.join(args)}` needs")
    pytest.fail(f"`{' '.join(command)}` exited {result.returncode}:\n{output}")


def _setuptools_here() -> bool:
    """Whether this interpreter has the build backend that pyproject.toml asks for, so no isolated build is needed."""
    try:
        return int(version("setuptools").split(".")[0]) >= 64
    except (PackageNotFoundError, ValueError):
        return False


def _build_wheel(tmp_path: Path) -> Path:
    """The wheel, built from a copy of the source tree (the build writes ``build/`` and ``*.egg-info`` into it)."""
    source, dist = tmp_path / "source", tmp_path / "dist"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.egg-info", "build")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, source / name)
    isolation = ["--no-build-isolation"] if _setuptools_here() else []
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", *isolation, "-w", str(dist), str(source)]
    _run(command, cwd=tmp_path)
    (wheel,) = dist.glob("mambaseg-*.whl")
    return wheel


def _prebuilt_files(wheel: Path) -> set[str]:
    prefix = "mambaseg_kernels/cpu/prebuilt/"
    with zipfile.ZipFile(wheel) as archive:
        return {name.removeprefix(prefix).partition(".")[0] for name in archive.namelist() if name.startswith(prefix)}


@pytest.mark.slow
def test_installed_wheel_plans_trains_and_predicts_outside_the_source_tree(tmp_path):
    wheel = _build_wheel(tmp_path)
    if PREBUILT:
        assert _prebuilt_files(wheel) == {PREBUILT_RECORD.partition(".")[0], *map(prebuilt_name, ISA_LEVELS)}
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    venv = tmp_path / "venv"
    try:
        _run([sys.executable, "-m", "venv", str(venv)], cwd=outside)
        python, mambaseg = venv / "bin" / "python", venv / "bin" / "mambaseg"
        # torch first, as scripts/setup.sh does; --no-compile: modules compile when first imported, most never are.
        _pip_install(python, outside, "--no-compile", TORCH)
        _pip_install(python, outside, "--no-compile", str(wheel))

        where = _run(
            [
                str(python),
                "-c",
                "import mambaseg; from mambaseg.workspace.config import config_dir; print(mambaseg.__file__);"
                " print(config_dir())",
            ],
            cwd=outside,
        ).split()
        assert [Path(path).resolve().is_relative_to(venv.resolve()) for path in where] == [True, True], where
        assert not any(Path(path).resolve().is_relative_to(ROOT) for path in where), where
        if PREBUILT:  # only the venv on PATH, no compiler, an empty JIT cache: the prebuilt kernel or nothing
            no_compiler = {"PATH": str(venv / "bin"), "CXX": "/nonexistent", "TORCH_EXTENSIONS_DIR": str(outside)}
            backend, module = _run([str(python), "-c", SCAN_WITHOUT_COMPILER], cwd=outside, **no_compiler).split()
            assert (backend, module) == ("cpu", prebuilt_name(select_isa_level()))

        raw = outside / "raw" / "Dataset001_Tiny"
        write_nnunet_dataset(raw, n_cases=5, shape=SHAPE, spacing=(1, 1, 1), n_test=1)
        workspace, predictions = outside / "workspace", outside / "predictions"
        common = [str(raw), "--workspace", str(workspace)]
        _run([str(mambaseg), "plan", *common, "--network", "unet_resenc", "--workers", "1"], cwd=outside)
        _run([str(mambaseg), "train", *common, *TRAIN], cwd=outside)
        run_dir = workspace / "Synthetic" / "runs" / "3d_fullres__unet_resenc"
        assert (run_dir / "fold_0" / "checkpoint_final.pt").is_file()
        predict = ["predict", "-i", str(raw / "imagesTs"), "-o", str(predictions), "-m", str(run_dir)]
        _run([str(mambaseg), *predict, "--device", "cpu"], cwd=outside)
        assert read_nifti_array(predictions / "case_005.nii.gz").shape == SHAPE
    finally:
        shutil.rmtree(venv, ignore_errors=True)  # a few GB with torch
