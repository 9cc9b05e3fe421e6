"""``scripts/machine_info.py``: the CPU line every benchmark prints with its figures."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "machine_info.py"
spec = importlib.util.spec_from_file_location("machine_info", SCRIPT)
machine_info = importlib.util.module_from_spec(spec)
spec.loader.exec_module(machine_info)

CPUINFO = """processor\t: 0
model name\t: AMD EPYC 9654 96-Core Processor
flags\t\t: fpu sse2 avx2 avx512f avx512bw
processor\t: 1
model name\t: AMD EPYC 9654 96-Core Processor
flags\t\t: fpu sse2 avx2 avx512f avx512bw
"""
LSCPU = "Architecture:  x86_64\nModel name:    Intel(R) Xeon(R) Platinum 8480+\nFlags:   avx2 amx_bf16 amx_tile\n"


def test_cpuinfo_gives_model_and_vector_flags():
    assert machine_info.parse_cpuinfo(CPUINFO) == (
        "AMD EPYC 9654 96-Core Processor",
        {"fpu", "sse2", "avx2", "avx512f", "avx512bw"},
    )
    line = machine_info.cpu_summary(CPUINFO)
    assert line.startswith("CPU: AMD EPYC 9654 96-Core Processor, ")
    assert line.endswith("avx2 yes, avx512f yes, amx no")


def test_lscpu_text_and_amx_from_any_amx_flag():
    assert machine_info.cpu_summary(LSCPU).endswith("avx2 yes, avx512f no, amx yes")
    assert machine_info.cpu_summary("").startswith("CPU: unknown CPU, ")
