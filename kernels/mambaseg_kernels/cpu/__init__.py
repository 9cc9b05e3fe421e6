"""The C++ CPU selective scan, compiled on first use with ``torch.utils.cpp_extension`` and cached.

``load_cpu_kernels()`` returns the compiled module (``selective_scan_fwd``, ``selective_scan_bwd``,
see ``selective_scan.cpp``), or None with a one-time warning when it cannot be built (no compiler).
The build targets this machine's processor (-march=native); the cache name carries a digest of the
processor's flags and of the sources and headers, so that a stale build or one made on another
machine sharing the cache is never loaded.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import platform
import warnings
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)

SOURCES = ("selective_scan.cpp",)
HEADERS = ("scan_math.h",)
# -fopenmp: at::parallel_for spreads the channel blocks over threads only when built with OpenMP.
CFLAGS = ["-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-std=c++17"]
LDFLAGS = ["-fopenmp"]
CHECKPOINT_CHUNK = 256  # kChunk in selective_scan.cpp: steps between the states the forward saves


def checkpoint_chunks(length: int) -> int:
    """How many states per channel the forward saves for a sequence of ``length`` steps: (b, d, chunks, n)."""
    return (length + CHECKPOINT_CHUNK - 1) // CHECKPOINT_CHUNK


def _build_tag(here: Path) -> str:
    """A digest of the processor's model and features, the sources, headers and flags: the build-cache key."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
        machine = [line for line in cpuinfo if line.startswith(("flags", "model name", "Features"))][:2]
    except OSError:
        machine = []
    digest = hashlib.sha1("\n".join([platform.machine(), *machine, *CFLAGS]).encode())
    for name in SOURCES + HEADERS:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()[:12]


@functools.cache
def load_cpu_kernels() -> ModuleType | None:
    """Build (once, then from the cache) and import the CPU kernel; None when that is impossible."""
    from torch.utils.cpp_extension import load

    here = Path(__file__).parent
    try:
        return load(
            name=f"mambaseg_scan_cpu_{_build_tag(here)}",
            sources=[str(here / s) for s in SOURCES],
            extra_include_paths=[str(here)],
            extra_cflags=CFLAGS,
            extra_ldflags=LDFLAGS,
            verbose=False,
        )
    except Exception as err:  # noqa: BLE001  (any build failure falls back to the reference)
        warnings.warn(
            f"mambaseg: the compiled CPU selective scan could not be built ({type(err).__name__}: {err}); "
            "falling back to the slow PyTorch reference. Install a C++ compiler (g++ or clang) to fix this.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
