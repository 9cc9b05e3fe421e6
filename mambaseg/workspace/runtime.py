"""Where and how work runs: the device, the DDP process group under torchrun, deterministic algorithms."""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist

from mambaseg.ops.scan_dispatch import check_backend_environment

log = logging.getLogger(__name__)


class DeviceError(ValueError):
    """A device that is not one, or is not on this machine."""


DEVICE_TYPES = ("cpu", "cuda", "mps")
CPU_FLAGS_SHOWN = ("avx2", "avx512f", "avx512_bf16")
"""The instruction-set flags that move CPU timings most, named beside the CPU model."""


def mps_available() -> bool:
    """Whether this PyTorch has a usable MPS (Apple silicon GPU) backend."""
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(choice: str) -> torch.device:
    """``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; plain ``cuda``
    means ``cuda:LOCAL_RANK``. On ``mps`` the selective scan runs its plain-PyTorch path (said in one log line).

    Raises:
        DeviceError: not a device name, or CUDA or MPS asked for on a machine without it.
    """
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(choice)
    except RuntimeError as err:
        raise DeviceError(f"device {choice!r}: not a device (auto, cpu, cuda, cuda:N or mps)") from err
    if device.type not in DEVICE_TYPES:
        raise DeviceError(f"device {choice!r}: mambaseg runs on {', '.join(DEVICE_TYPES)}, not {device.type}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {choice!r}: CUDA is not available on this machine")
    if device.type == "mps":
        if not mps_available():
            raise DeviceError(
                f"device {choice!r}: this PyTorch has no usable MPS backend (Apple silicon with macOS 12.3 or later "
                "and an arm64 build of PyTorch); use cpu"
            )
        log.info("device mps: the selective scan runs its plain-PyTorch path there (the compiled kernels are CPU/CUDA)")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def launched_by_torchrun() -> bool:
    """Whether this process is one of several that torchrun started."""
    return int(os.environ.get("WORLD_SIZE", 1)) > 1


@contextmanager
def distributed(device_choice: str) -> Iterator[tuple[torch.device, bool]]:
    """The device, and whether this is rank 0; joins (and leaves) the process group when started by torchrun.

    NCCL serves CUDA devices, gloo the CPU.
    """
    device = resolve_device(device_choice)
    check_backend_environment(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    joined = launched_by_torchrun() and not dist.is_initialized()
    if joined:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield device, int(os.environ.get("RANK", 0)) == 0
    finally:
        if joined and dist.is_initialized():
            dist.destroy_process_group()


def barrier() -> None:
    """Wait for every process of the group (nothing without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def make_deterministic() -> None:
    """Deterministic algorithms only (slower): the same seed gives the same weights."""
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def launch_torchrun(num_processes: int, module_arguments: Sequence[str]) -> int:
    """Run ``python -m mambaseg ARGUMENTS`` under torchrun with ``num_processes`` processes; its exit status."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={num_processes}",
        "-m",
        "mambaseg",
        *module_arguments,
    ]
    log.info("launching %s", " ".join(command))
    return subprocess.call(command)


def machine_description(device: torch.device) -> dict[str, str]:
    """The CPU model (and GPU, on CUDA), device and torch version that costs were measured or a report drawn on."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        fields = dict(line.split(":", 1) for line in cpuinfo.read_text().splitlines() if ":" in line)
        fields = {key.strip(): value.strip() for key, value in fields.items()}
        flags = fields.get("flags", "").split()
        shown = [flag for flag in CPU_FLAGS_SHOWN if flag in flags] + ["amx"] * any(f.startswith("amx") for f in flags)
        cpu = f"{fields.get('model name', cpu)} ({' '.join(shown) or 'no avx2'})"
    machine = {"cpu": f"{cpu}, {os.cpu_count()} logical CPUs", "device": str(device), "torch": torch.__version__}
    if device.type == "cuda":
        machine["gpu"] = torch.cuda.get_device_name(device)
    return machine
