"""``scripts/gpu_check.py`` without a CUDA device: one ``no CUDA device`` line per section, saved under the output."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _skip_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "skipped: no CUDA device" in line]


def test_every_section_says_no_cuda_device_and_is_saved(script, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert script.main(["--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    lines = _skip_lines(printed)
    assert [line.split("]")[0] for line in lines] == ["[device", "[scan", "[train", "[ddp"]
    assert all("torch.cuda.is_available() is False" in line for line in lines)
    assert "0 of 4 sections ran (no CUDA device)" in printed
    assert (tmp_path / "out" / "gpu_check.txt").read_text() == printed


def test_output_folder_is_out_variable_else_gpu_check_out(script, monkeypatch, tmp_path):
    monkeypatch.setenv("OUT", str(tmp_path))
    assert script.output_dir(None) == tmp_path
    assert script.output_dir("elsewhere") == Path("elsewhere")
    monkeypatch.delenv("OUT")
    assert script.output_dir(None) == Path("gpu_check_out")


@pytest.mark.slow
def test_script_run_as_a_process_with_cuda_hidden_exits_at_once(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OUT": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--sections", "scan", "train"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert len(_skip_lines(done.stdout)) == 2
    assert _skip_lines((tmp_path / "gpu_check.txt").read_text()) == _skip_lines(done.stdout)
