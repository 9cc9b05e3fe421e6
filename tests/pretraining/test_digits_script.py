"""``scripts/pretrain_digits.py`` on a tiny subset of scikit-learn's digits (the real proof is run by hand)."""

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("sklearn")

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "pretrain_digits.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("pretrain_digits", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_digits_folder_is_split_80_20_per_class(script, tmp_path):
    assert script.write_digits_folder(tmp_path / "digits", size=16, per_class=10) == (80, 20)
    for k in range(10):
        assert len(list((tmp_path / "digits" / "train" / f"digit{k}").glob("*.png"))) == 8
        assert len(list((tmp_path / "digits" / "val" / f"digit{k}").glob("*.png"))) == 2


def test_script_pretrains_on_a_subset(script, tmp_path, monkeypatch, capsys):
    argv = [str(tmp_path / "digits"), "--workspace", str(tmp_path / "ws"), "--per-class", "7", "--size", "16"]
    argv += ["--epochs", "1", "--batch-size", "16", "--tiny", "--skip-finetune"]
    monkeypatch.setattr(sys, "argv", ["pretrain_digits.py", *argv])
    script.main()
    assert "val top-1" in capsys.readouterr().out
    assert (tmp_path / "ws" / "pretraining" / "digits__vmamba_tiny" / "encoder.pt").is_file()
