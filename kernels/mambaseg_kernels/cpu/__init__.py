"""The C++ CPU selective scan, compiled on first use with ``torch.utils.cpp_extension`` and cached.

``load_cpu_kernels()`` returns the compiled module (``selective_scan_fwd``, ``selective_scan_bwd``,
see ``selective_scan.cpp``), or None with a one-time warning when it cannot be built (no compiler).

The kernel is built for one instruction-set level (``ISA_LEVELS``): on x86-64 ``avx512`` (x86-64-v4, 512-bit
vectors), ``avx2`` (x86-64-v3: AVX2 and FMA) or ``generic`` (baseline x86-64, SSE2); elsewhere ``generic`` is
built for the machine's own processor. The highest level the processor supports is used unless
``MAMBASEG_CPU_ISA`` names a level, which must be one the processor supports (a ValueError naming the variable
otherwise): benchmarks and tests use it to run the AVX2 build on an AVX-512 machine. The cache name carries the
level and a digest of the processor's flags, the compiler flags, the sources and the headers, so that a stale
build or one made on another machine sharing the cache is never loaded.

Loading holds an ``flock`` on the build folder (``mambaseg.flock``), which the system releases when its holder
dies: torch's own lock file (``lock``), which a process killed while building or loading leaves behind and for
which every later process would wait forever, is removed by the next loader that holds the flock.

A wheel carries the kernel prebuilt (``setup.py`` compiles each x86-64 level with these sources and flags into
``prebuilt/``, beside ``prebuilt/build.json``, which records what it was built against): it is loaded, with no
compiler, when the record matches this machine, Python, torch (``torch.__version__`` and its C++ ABI flag), the
sources beside it and the level's flags; otherwise the JIT build above runs, after a log line saying why.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.machinery
import importlib.util
import json
import logging
import os
import platform
import sys
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType

SOURCES = ("selective_scan.cpp",)
HEADERS = ("scan_math.h",)
ISA_ENV = "MAMBASEG_CPU_ISA"
ISA_LEVELS = ("avx512", "avx2", "generic")  # highest first
# The processor flags (as /proc/cpuinfo names them) each x86-64 level needs: those of x86-64-v4 and -v3.
ISA_CPU_FLAGS = {
    "avx512": ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl", "avx2", "fma"),
    "avx2": ("avx2", "fma", "bmi1", "bmi2", "f16c", "movbe", "abm"),
    "generic": (),
}
X86_ARCH_FLAGS = {
    "avx512": ["-march=x86-64-v4", "-mprefer-vector-width=512"],
    "avx2": ["-march=x86-64-v3"],
    "generic": ["-march=x86-64"],
}
# -fopenmp: at::parallel_for spreads the channel blocks over threads only when built with OpenMP.
# -fno-trapping-math (no floating-point traps, results unchanged) lets the compiler compute both sides of a
# select: without it GCC keeps the clamps of fast_exp as branches and leaves the AVX2 loops scalar.
COMMON_CFLAGS = ["-O3", "-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-std=c++17"]
LDFLAGS = ["-fopenmp"]
CHECKPOINT_CHUNK = 256  # kChunk in selective_scan.cpp: steps between the states the forward saves
PREBUILT_DIR = "prebuilt"
PREBUILT_RECORD = "build.json"
PREBUILT_SUFFIXES = tuple(importlib.machinery.EXTENSION_SUFFIXES)

log = logging.getLogger(__name__)


def checkpoint_chunks(length: int) -> int:
    """How many states per channel the forward saves for a sequence of ``length`` steps: (b, d, chunks, n)."""
    return (length + CHECKPOINT_CHUNK - 1) // CHECKPOINT_CHUNK


@functools.cache
def _cpuinfo_lines() -> tuple[str, ...]:
    try:
        return tuple(Path("/proc/cpuinfo").read_text().splitlines())
    except OSError:
        return ()


def _is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def supported_isa_levels(cpuinfo: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The levels of ``ISA_LEVELS`` this processor runs, highest first (``generic`` always)."""
    if not _is_x86():
        return ("generic",)
    lines = _cpuinfo_lines() if cpuinfo is None else cpuinfo
    flags = next((set(line.partition(":")[2].split()) for line in lines if line.startswith("flags")), set())
    return tuple(level for level in ISA_LEVELS if set(ISA_CPU_FLAGS[level]) <= flags)


def select_isa_level(environ: Mapping[str, str] | None = None, supported: tuple[str, ...] | None = None) -> str:
    """The level to build: ``MAMBASEG_CPU_ISA`` when set, else the highest the processor supports.

    Raises ValueError naming the variable and its value when it is not a level, or one this processor lacks.
    """
    environ = os.environ if environ is None else environ
    supported = supported_isa_levels() if supported is None else supported
    requested = environ.get(ISA_ENV, "").strip()
    if not requested:
        return supported[0]
    if requested not in ISA_LEVELS:
        raise ValueError(f"{ISA_ENV}={requested!r} is not an instruction-set level; choose one of {ISA_LEVELS}")
    if requested not in supported:
        raise ValueError(
            f"{ISA_ENV}={requested}: this processor does not support it (it supports {', '.join(supported)})"
        )
    return requested


def compiler_flags(level: str) -> list[str]:
    """The C++ flags of a build at ``level``."""
    arch = X86_ARCH_FLAGS[level] if _is_x86() else ["-march=native"]
    return [*COMMON_CFLAGS, *arch]


def _build_tag(here: Path, level: str) -> str:
    """A digest of the processor's model and features, the sources, headers and flags: the build-cache key."""
    machine = [line for line in _cpuinfo_lines() if line.startswith(("flags", "model name", "Features"))][:2]
    digest = hashlib.sha1("\n".join([platform.machine(), *machine, *compiler_flags(level)]).encode())
    for name in SOURCES + HEADERS:
        digest.update((here / name).read_bytes())
    return f"{level}_{digest.hexdigest()[:12]}"


def load_cpu_kernels(isa: str | None = None) -> ModuleType | None:
    """The CPU kernel built for ``isa`` (default: ``select_isa_level()``), built once, then from the cache.

    None, with a one-time warning, when it cannot be built; ValueError for a bad ``MAMBASEG_CPU_ISA``.
    """
    if isa is None:
        return _load(select_isa_level())
    if isa not in supported_isa_levels():
        raise ValueError(f"isa={isa!r}: this processor supports {supported_isa_levels()}")
    return _load(isa)


BUILD_FLOCK = "mambaseg.flock"
TORCH_BATON = "lock"  # torch.utils.cpp_extension's lock file in a build folder


@contextlib.contextmanager
def build_folder_lock(folder: Path) -> Iterator[None]:
    """Hold an flock on ``folder`` (released by the system if this process dies) and clear a stale torch lock.

    Every mambaseg loader takes this flock before torch's own lock file, so a torch lock file found while holding
    it was left by a process that died: it is removed, with a warning, instead of being waited for forever.
    Where ``fcntl`` is missing (Windows) nothing is locked.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / BUILD_FLOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            baton = folder / TORCH_BATON
            if baton.exists():
                warnings.warn(
                    f"mambaseg: removing {baton}, left by a process that died while building or loading the CPU "
                    "kernel (a build in progress would hold mambaseg's lock)",
                    RuntimeWarning,
                    stacklevel=3,
                )
                baton.unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build_folder(name: str) -> Path:
    """The folder torch builds the extension ``name`` in."""
    from torch.utils.cpp_extension import _get_build_directory

    return Path(_get_build_directory(name, verbose=False))


def prebuilt_name(level: str) -> str:
    """The module name of the kernel prebuilt at ``level`` in a wheel (``prebuilt/<name><extension suffix>``)."""
    return f"mambaseg_scan_cpu_{level}_prebuilt"


def sources_digest(here: Path) -> str:
    """A digest of the sources and headers in ``here``: a prebuilt kernel is loaded only beside its own sources."""
    digest = hashlib.sha256()
    for name in SOURCES + HEADERS:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()


def build_record(levels: list[str]) -> dict:
    """What ``prebuilt/build.json`` records of a build at ``levels``, made by this interpreter and torch."""
    import torch

    return {
        "torch": torch.__version__,
        "cxx11_abi": bool(torch._C._GLIBCXX_USE_CXX11_ABI),
        "python": sys.implementation.cache_tag,
        "system": platform.system(),
        "machine": platform.machine().lower(),
        "sources": sources_digest(Path(__file__).parent),
        "flags": {level: compiler_flags(level) for level in levels},
    }


def prebuilt_mismatch(record: dict, level: str) -> str | None:
    """Why a prebuilt kernel described by ``record`` cannot be loaded here at ``level``; None when it can."""
    here = build_record([level])
    for key, what in (("machine", "processor"), ("system", "system"), ("python", "Python"), ("torch", "torch")):
        if record.get(key) != here[key]:
            return f"it was built for {what} {record.get(key)}, this is {here[key]}"
    if record.get("cxx11_abi") != here["cxx11_abi"]:
        return f"it was built with _GLIBCXX_USE_CXX11_ABI={record.get('cxx11_abi')}, this torch has {here['cxx11_abi']}"
    if level not in record.get("flags", {}):
        return f"the {level} level was not prebuilt (prebuilt: {', '.join(record.get('flags', {})) or 'none'})"
    if record["flags"][level] != here["flags"][level]:
        return f"it was built with the flags {record['flags'][level]}, the JIT build now uses {here['flags'][level]}"
    if record.get("sources") != here["sources"]:
        return "the kernel sources beside it have changed since it was built"
    return None


def _load_prebuilt(level: str, folder: Path) -> ModuleType | None:
    """The kernel prebuilt at ``level`` in ``folder`` when it matches this machine; None, logged once, otherwise."""
    record_file = folder / PREBUILT_RECORD
    if not record_file.is_file():
        log.debug("mambaseg: no prebuilt CPU kernel in %s; building it on first use", folder)
        return None
    try:
        why = prebuilt_mismatch(json.loads(record_file.read_text()), level)
    except (OSError, ValueError, AttributeError) as err:
        why = f"{record_file} cannot be read ({type(err).__name__}: {err})"
    paths = [folder / f"{prebuilt_name(level)}{suffix}" for suffix in PREBUILT_SUFFIXES]
    path = next((path for path in paths if path.is_file()), None)
    if why is None and path is None:
        why = f"{prebuilt_name(level)} is missing from {folder}"
    if why is None:
        try:
            spec = importlib.util.spec_from_file_location(prebuilt_name(level), path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
        except ImportError as err:
            why = f"{path} does not load ({err})"
    log.warning("mambaseg: the prebuilt %s CPU kernel is not used, %s; building it now instead", level, why)
    return None


@functools.cache
def _load(level: str) -> ModuleType | None:
    import torch  # noqa: F401  (the kernel links against the libraries that importing torch loads)

    prebuilt = _load_prebuilt(level, _prebuilt_folder())
    return _build(Path(__file__).parent, level) if prebuilt is None else prebuilt


def _prebuilt_folder() -> Path:
    return Path(__file__).parent / PREBUILT_DIR


def _build(here: Path, level: str) -> ModuleType | None:
    from torch.utils.cpp_extension import load

    name = f"mambaseg_scan_cpu_{_build_tag(here, level)}"
    try:
        with build_folder_lock(_build_folder(name)):
            return load(
                name=name,
                sources=[str(here / s) for s in SOURCES],
                extra_include_paths=[str(here)],
                extra_cflags=compiler_flags(level),
                extra_ldflags=LDFLAGS,
                verbose=False,
            )
    except Exception as err:  # noqa: BLE001  (any build failure falls back to the reference)
        warnings.warn(
            f"mambaseg: the compiled CPU selective scan could not be built ({type(err).__name__}: {err}); "
            "falling back to the slow PyTorch reference. Install a C++ compiler (g++ or clang) to fix this.",
            RuntimeWarning,
            stacklevel=4,
        )
        return None
