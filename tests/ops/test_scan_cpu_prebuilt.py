"""The CPU kernel prebuilt in a wheel is loaded when it matches this machine and torch, else the JIT build runs.

A fake prebuilt folder stands in for a wheel's: a Python module with the prebuilt kernel's name (the loader is
told to accept ``.py``) and a ``build.json`` as ``setup.py`` writes it; nothing is compiled here.
"""

from __future__ import annotations

import json
import logging
import re
import sys

import pytest

import mambaseg_kernels.cpu as cpu_kernels

LEVEL = "generic"
JIT_BUILT = object()


@pytest.fixture
def prebuilt(monkeypatch, tmp_path):
    """A prebuilt folder with a fake ``generic`` kernel recorded as built here; the JIT build returns JIT_BUILT."""
    import torch.utils.cpp_extension

    (tmp_path / f"{cpu_kernels.prebuilt_name(LEVEL)}.py").write_text("PREBUILT = True\n")
    (tmp_path / cpu_kernels.PREBUILT_RECORD).write_text(json.dumps(cpu_kernels.build_record([LEVEL])))
    monkeypatch.setattr(cpu_kernels, "PREBUILT_SUFFIXES", (".py",))
    monkeypatch.setattr(cpu_kernels, "_prebuilt_folder", lambda: tmp_path)
    monkeypatch.setattr(torch.utils.cpp_extension, "load", lambda **_kwargs: JIT_BUILT)
    monkeypatch.setattr(cpu_kernels, "_build_folder", lambda name: tmp_path / "jit")
    monkeypatch.delitem(sys.modules, cpu_kernels.prebuilt_name(LEVEL), raising=False)
    return tmp_path


def _edit_record(folder, **changes) -> None:
    record = json.loads((folder / cpu_kernels.PREBUILT_RECORD).read_text())
    (folder / cpu_kernels.PREBUILT_RECORD).write_text(json.dumps({**record, **changes}))


def test_a_matching_prebuilt_kernel_is_loaded_without_a_build(prebuilt, caplog):
    with caplog.at_level(logging.DEBUG, logger=cpu_kernels.__name__):
        module = cpu_kernels._load.__wrapped__(LEVEL)
    assert module is not JIT_BUILT and module.PREBUILT
    assert module.__file__ == str(prebuilt / f"{cpu_kernels.prebuilt_name(LEVEL)}.py")
    assert caplog.records == []


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"torch": "2.4.0"}, r"it was built for torch 2\.4\.0, this is "),
        ({"python": "cpython-39"}, r"it was built for Python cpython-39, this is cpython-"),
        ({"machine": "aarch64"}, r"it was built for processor aarch64"),
        ({"cxx11_abi": None}, r"it was built with _GLIBCXX_USE_CXX11_ABI=None, this torch has (True|False)"),
        ({"sources": "0" * 64}, r"the kernel sources beside it have changed since it was built"),
        ({"flags": {"avx2": ["-O3"]}}, r"the generic level was not prebuilt \(prebuilt: avx2\)"),
        ({"flags": {LEVEL: ["-O0"]}}, r"it was built with the flags \['-O0'\], the JIT build now uses"),
    ],
)
def test_a_prebuilt_kernel_that_does_not_match_falls_back_to_the_jit_build_saying_why(
    prebuilt, caplog, changes, reason
):
    _edit_record(prebuilt, **changes)
    with caplog.at_level(logging.WARNING, logger=cpu_kernels.__name__):
        assert cpu_kernels._load.__wrapped__(LEVEL) is JIT_BUILT
    (message,) = [record.getMessage() for record in caplog.records]
    assert message.startswith("mambaseg: the prebuilt generic CPU kernel is not used, ")
    assert message.endswith("; building it now instead")
    assert re.search(reason, message), message


def test_a_missing_or_broken_prebuilt_library_falls_back_saying_why(prebuilt, caplog):
    library = prebuilt / f"{cpu_kernels.prebuilt_name(LEVEL)}.py"
    library.write_text("raise ImportError('undefined symbol: _ZN3c10')\n")
    with caplog.at_level(logging.WARNING, logger=cpu_kernels.__name__):
        assert cpu_kernels._load.__wrapped__(LEVEL) is JIT_BUILT
        library.unlink()
        assert cpu_kernels._load.__wrapped__(LEVEL) is JIT_BUILT
    assert [record.getMessage().partition(", ")[2] for record in caplog.records] == [
        f"{library} does not load (undefined symbol: _ZN3c10); building it now instead",
        f"{cpu_kernels.prebuilt_name(LEVEL)} is missing from {prebuilt}; building it now instead",
    ]


def test_without_a_prebuilt_folder_the_jit_build_runs_quietly(prebuilt, caplog):
    (prebuilt / cpu_kernels.PREBUILT_RECORD).unlink()
    with caplog.at_level(logging.INFO, logger=cpu_kernels.__name__):
        assert cpu_kernels._load.__wrapped__(LEVEL) is JIT_BUILT
    assert caplog.records == []


def test_the_record_names_the_torch_it_was_built_against():
    import torch

    record = cpu_kernels.build_record(list(cpu_kernels.ISA_LEVELS))
    assert record["torch"] == torch.__version__ and record["cxx11_abi"] == bool(torch._C._GLIBCXX_USE_CXX11_ABI)
    assert set(record["flags"]) == set(cpu_kernels.ISA_LEVELS)
    assert cpu_kernels.prebuilt_mismatch(record, LEVEL) is None
