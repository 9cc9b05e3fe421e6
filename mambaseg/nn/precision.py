"""Which reduced precision a device computes natively, for autocast in training and prediction.

bfloat16 on a CPU is fast only where the processor has bf16 instructions (x86: AVX512_BF16 or AMX-BF16;
oneDNN then runs convolutions and matmuls in bf16); elsewhere PyTorch emulates it and it is slower than
float32, so autocast must not be switched on there.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

# /proc/cpuinfo flags that mean native bf16 arithmetic on x86
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def _cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags of the first processor listed in a /proc/cpuinfo text."""
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this machine's CPU computes bfloat16 natively (Linux x86: read from /proc/cpuinfo)."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(_cpu_flags(cpuinfo) & NATIVE_BF16_FLAGS)


def native_autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The reduced precision autocast should use on ``device``, or None where only float32 is fast.

    CUDA: float16 (as nnU-Net); CPU: bfloat16 where the processor has it natively; otherwise None.
    """
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None
