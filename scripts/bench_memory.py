"""The planner's memory model against the measured peak memory of one training step on the CPU, in one run.

For each of the 12 topologies of the table in ``docs/planning.md`` (``TOPOLOGIES``): the peak a forward + backward
adds to a fresh process (``mambaseg.planning.memory_probe.measure_step_memory``: float32, one thread, batch as
listed) beside the model's ``estimate_memory(...).step_bytes(batch)`` and the error of the model. With
``--nnunet-resenc-m`` it also prints the model's total (weights, gradients, two Adam states, activations) for
nnU-Net's ResEnc M plan of a 1 mm isotropic dataset at 128³, batch 2 (the planner's own ``unet_resenc`` topology
for that patch), the figure the GPU caveat of ``docs/planning.md`` quotes. The CPU is printed with the figures.

Usage::

    python scripts/bench_memory.py                          # all 12 rows (a few minutes on 2 cores)
    python scripts/bench_memory.py --max-side 32 --nnunet-resenc-m   # the 32³ rows only, a quick check
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mambaseg.networks import network_entry
from mambaseg.planning.memory import estimate_memory
from mambaseg.planning.memory_probe import measure_step_memory

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine_info import cpu_summary  # noqa: E402

F8_64 = ("8-64, 4 stages", {"n_stages": 4, "features_per_stage": (8, 16, 32, 64), "strides": (1, 2, 2, 2)})
F32_256 = ("32-256, 4 stages", {"n_stages": 4, "features_per_stage": (32, 64, 128, 256), "strides": (1, 2, 2, 2)})
F16_256 = (
    "16-256, 5 stages",
    {"n_stages": 5, "features_per_stage": (16, 32, 64, 128, 256), "strides": (1, 2, 2, 2, 2)},
)
F32_320 = (
    "32-320, 6 stages",
    {"n_stages": 6, "features_per_stage": (32, 64, 128, 256, 320, 320), "strides": (1, 2, 2, 2, 2, 2)},
)
F16_64 = ("16, 64 (2 stages)", {"n_stages": 2, "features_per_stage": (16, 64), "strides": (1, 2)})
F16_128 = ("16, 128 (2 stages)", {"n_stages": 2, "features_per_stage": (16, 128), "strides": (1, 2)})

# (network, (label, kwargs), cube side, batch)
TOPOLOGIES = [
    ("unet_resenc", F8_64, 32, 2),
    ("unet_resenc", F8_64, 48, 2),
    ("unet_resenc", F32_256, 32, 2),
    ("unet_resenc", F32_256, 48, 2),
    ("unet_resenc", F16_256, 64, 1),
    ("unet_resenc", F32_320, 64, 1),
    ("umamba_bot", F8_64, 32, 2),
    ("umamba_bot", F8_64, 48, 2),
    ("umamba_bot", F16_64, 32, 2),
    ("umamba_bot", F16_128, 48, 2),
    ("umamba_bot", F32_256, 32, 2),
    ("umamba_bot", F32_320, 64, 1),
]
MB = 2**20


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-side", type=int, default=64, help="only the rows whose cube side is at most this")
    parser.add_argument("--nnunet-resenc-m", action="store_true", help="also the ResEnc M 128³ batch-2 estimate")
    args = parser.parse_args(argv)

    print(cpu_summary())
    print("float32 forward + backward, 1 input channel, 3 classes, one thread; measured by memory_probe")
    print()
    print("| network | features | patch | batch | measured MB | model MB | error |")
    print("|---|---|---|---|---|---|---|")
    for network, (label, kwargs), side, batch in TOPOLOGIES:
        if side > args.max_side:
            continue
        patch = (side,) * 3
        measured = measure_step_memory(network, 3, 1, 3, kwargs, patch, batch_size=batch)
        model = estimate_memory(network, 3, 1, 3, kwargs, patch).step_bytes(batch)
        print(
            f"| {network} | {label} | {side}³ | {batch} | {measured / MB:.0f} | {model / MB:.0f} | "
            f"{model / measured - 1:+.0%} |",
            flush=True,
        )
    if args.nnunet_resenc_m:
        choice = network_entry("unet_resenc").topology([1.0, 1.0, 1.0], [128, 128, 128])
        total = estimate_memory("unet_resenc", 3, 1, 3, choice.kwargs, choice.patch_size).total_bytes(2)
        print()
        print(
            f"ResEnc M plan at 128³, batch 2 (features {choice.kwargs['features_per_stage']}): model total "
            f"{total / 1e9:.1f} GB ({total / 2**30:.1f} GiB), weights + gradients + 2 Adam states + activations"
        )


if __name__ == "__main__":
    main()
