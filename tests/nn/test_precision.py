"""The native reduced-precision choice read from the processor's flags."""

import torch

from mambaseg.nn import precision


def test_cpu_flags_are_read_from_the_first_flags_line():
    cpuinfo = "processor\t: 0\nmodel name\t: X\nflags\t\t: fpu avx2 amx_bf16\n\nprocessor\t: 1\nflags\t: fpu\n"
    assert precision._cpu_flags(cpuinfo) == {"fpu", "avx2", "amx_bf16"}
    assert precision._cpu_flags("no flags here") == set()


def test_native_autocast_dtype_follows_the_cpu(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.native_autocast_dtype(torch.device("cpu")) is torch.bfloat16
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert precision.native_autocast_dtype(torch.device("cpu")) is None
    assert precision.native_autocast_dtype(torch.device("cuda")) is torch.float16
    assert precision.native_autocast_dtype(torch.device("meta")) is None
