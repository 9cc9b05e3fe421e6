"""Measured peak memory of one training step (forward + backward) on the CPU, in a fresh process.

The measurement is the growth of the process's resident set across the step: the kernel's
high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs`` just before the step) minus the
resident set before it. The network, its weights and the input batch exist before the step, so
the growth is the gradients plus everything the step allocates (saved activations, temporaries).
glibc is told to serve every block over 64 KiB by ``mmap`` and to return freed memory at once, and
one intra-op thread is used, so the figure does not depend on allocator caching; repeated runs
agree within about 1 MB. Linux only.

Run as ``python -m mambaseg.planning.memory_probe JSON`` where JSON holds ``network``,
``spatial_dims``, ``in_channels``, ``num_classes``, ``kwargs``, ``patch_size`` and ``batch_size``;
it prints ``{"peak_bytes": ..., "parameters": ...}``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "131072", "MALLOC_ARENA_MAX": "1"}


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {key} line")


def _probe(spec: dict[str, Any]) -> dict[str, int]:
    import torch

    from mambaseg.networks import create

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = create(spec["network"], spec["spatial_dims"], spec["in_channels"], spec["num_classes"], **spec["kwargs"])
    x = torch.randn(spec["batch_size"], spec["in_channels"], *spec["patch_size"])
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    out = net(x)
    outputs = out if isinstance(out, list) else [out]
    sum(o.float().square().mean() for o in outputs).backward()
    peak = _status_kib("VmHWM")
    return {"peak_bytes": (peak - before) * 1024, "parameters": sum(p.numel() for p in net.parameters())}


def measure_step_memory(
    network: str,
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    kwargs: dict[str, Any],
    patch_size: Sequence[int],
    batch_size: int,
) -> int:
    """Peak bytes a forward + backward adds to a process holding the network and the batch (see module doc)."""
    spec = {
        "network": network,
        "spatial_dims": spatial_dims,
        "in_channels": in_channels,
        "num_classes": num_classes,
        "kwargs": kwargs,
        "patch_size": list(patch_size),
        "batch_size": batch_size,
    }
    env = {**os.environ, **MALLOC_ENV, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mambaseg.planning.memory_probe", json.dumps(spec)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"memory probe for {network} failed:\n{done.stderr[-2000:]}")
    return int(json.loads(done.stdout.strip().splitlines()[-1])["peak_bytes"])


if __name__ == "__main__":
    sys.stdout.write(json.dumps(_probe(json.loads(sys.argv[1]))) + "\n")
