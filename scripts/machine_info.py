"""The CPU a benchmark ran on, printed by every ``scripts/bench_*.py`` with its figures.

``cpu_summary()`` reads ``/proc/cpuinfo`` (``lscpu`` when that file is absent): the model name, the logical CPUs
this process may use, and whether the vector extensions the kernels care about are present (avx2, avx512f,
and amx: any of amx_tile / amx_bf16 / amx_int8).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

VECTOR_FLAGS = ("avx2", "avx512f", "amx")


def parse_cpuinfo(text: str) -> tuple[str, set[str]]:
    """(model name, flags) from the text of ``/proc/cpuinfo`` or of ``lscpu`` ("Model name:" / "Flags:")."""
    model, flags = "unknown CPU", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and model == "unknown CPU":
            model = " ".join(value.split())
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model, flags


def cpu_summary(cpuinfo: str | None = None) -> str:
    """One line: ``CPU: MODEL, N logical CPUs usable; avx2 yes, avx512f no, amx no``."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        if path.is_file():
            cpuinfo = path.read_text()
        else:
            try:
                cpuinfo = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
            except OSError:
                cpuinfo = ""
    model, flags = parse_cpuinfo(cpuinfo)
    present = {
        "avx2": "avx2" in flags,
        "avx512f": "avx512f" in flags,
        "amx": any(f.startswith("amx") for f in flags),
    }
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    marks = ", ".join(f"{name} {'yes' if present[name] else 'no'}" for name in VECTOR_FLAGS)
    return f"CPU: {model}, {usable} logical CPUs usable; {marks}"


if __name__ == "__main__":
    print(cpu_summary())
