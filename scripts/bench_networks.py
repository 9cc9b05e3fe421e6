"""Benchmark every registered network on the CPU: parameters, FLOPs, forward time and peak memory.

Each (network, input size) runs in its own subprocess so that memory peaks do not mix:

- parameters: all parameters of the default-size network (in_channels 1, num_classes 3);
- FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over one forward pass; it counts matmuls and
  convolutions, not elementwise work, so the selective scan's recurrence (about 9 * b * d * l * n
  per scan) is not included;
- forward time: median wall time of ``--repeats`` forward passes under ``torch.inference_mode``, after a
  warm-up pass and the counted pass;
- peak memory: growth of the process's peak resident set (``resource.getrusage().ru_maxrss``) from
  just before the first forward pass (network and input built) to after the last; it includes about
  80 MiB that PyTorch's first forward pass allocates whatever the network (see the tiny variants).

U-Mamba Enc is built with ``patch_size`` set to the input size, so it picks channel tokens as U-Mamba does.

Baseline: ``--baseline`` (default ``unet_resenc``, the nnU-Net ResEnc network) is measured in the same run at
each input size, also when ``--networks`` leaves it out; every row gives its forward time and peak memory as a
ratio to the baseline's at the same size. The table's header names the CPU (model, avx2 / avx512f / amx), the
threads and the number of timed passes.

Usage::

    python scripts/bench_networks.py                              # all networks, 1x1x128x128 and 1x1x64x64x64
    python scripts/bench_networks.py --networks segmamba umamba_bot --sizes 64x64x64 --markdown bench.md
    python scripts/bench_networks.py --tiny --sizes 32x32 16x16x16    # the tiny test variants, a quick check
    python scripts/bench_networks.py --networks umamba_bot --baseline unet_resenc --tiny --sizes 16x16x16 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from mambaseg.networks import create, list_networks

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine_info import cpu_summary  # noqa: E402

log = logging.getLogger("bench_networks")

DEFAULT_SIZES = ("128x128", "64x64x64")
EXTRA_KWARGS = {"umamba_enc": lambda size: {"patch_size": size}}
COLUMNS = (
    "network",
    "input",
    "params (M)",
    "GFLOPs",
    "forward (s)",
    "peak RSS growth (MiB)",
    "forward / baseline",
    "peak / baseline",
)


def parse_size(text: str) -> tuple[int, ...]:
    """``"64x64x64"`` -> (64, 64, 64); two or three positive sizes."""
    try:
        size = tuple(int(s) for s in text.lower().split("x"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"size {text!r} is not like 128x128 or 64x64x64") from err
    if len(size) not in (2, 3) or min(size) < 1:
        raise argparse.ArgumentTypeError(f"size {text!r} needs two or three positive sizes")
    return size


def measure(name: str, size: tuple[int, ...], tiny: bool, repeats: int, threads: int) -> dict:
    """Build ``name`` for ``size`` and measure it in this process with ``threads`` intra-op threads."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    kwargs = EXTRA_KWARGS[name](size) if name in EXTRA_KWARGS else {}
    net = create(name, len(size), 1, 3, tiny=tiny, **kwargs).eval()
    x = torch.randn(1, 1, *size)
    params = sum(p.numel() for p in net.parameters())
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.inference_mode():
        net(x)
        counter = FlopCounterMode(display=False)
        with counter:
            net(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - start)
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "params": params,
        "flops": counter.get_total_flops(),
        "seconds": statistics.median(times),
        "peak_mib": (rss_after - rss_before) / 1024,  # ru_maxrss is in KiB on Linux
    }


def run_child(name: str, size: tuple[int, ...], tiny: bool, repeats: int, threads: int, timeout: float) -> dict | str:
    """Measure in a fresh interpreter; a dict of results, or a short reason why there are none."""
    command = [sys.executable, __file__, "--child", name, "x".join(map(str, size))]
    command += ["--repeats", str(repeats), "--threads", str(threads)]
    if tiny:
        command.append("--tiny")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:.0f} s"
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["no output"]
        return lines[-1][:120]
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}" if reference > 0 else "n/a"


def row(name: str, size: tuple[int, ...], result: dict | str, baseline: dict | str) -> tuple[str, ...]:
    shape = "1x1x" + "x".join(map(str, size))
    if isinstance(result, str):
        return (name, shape, "n/a", "n/a", "n/a", result.replace("|", "/"), "n/a", "n/a")
    ratios = ("n/a", "n/a")
    if not isinstance(baseline, str):
        ratios = (_ratio(result["seconds"], baseline["seconds"]), _ratio(result["peak_mib"], baseline["peak_mib"]))
    return (
        name,
        shape,
        f"{result['params'] / 1e6:.3g}",
        f"{result['flops'] / 1e9:.3g}",
        f"{result['seconds']:.3f}",
        f"{result['peak_mib']:.0f}",
        *ratios,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", help="names to benchmark (default: every registered network)")
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[parse_size(s) for s in DEFAULT_SIZES])
    parser.add_argument("--baseline", default="unet_resenc", help="network every row is compared with, same size")
    parser.add_argument("--tiny", action="store_true", help="benchmark the tiny test variants instead")
    parser.add_argument("--repeats", type=int, default=3, help="timed forward passes (median reported)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="intra-op threads")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per network and size")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument("--child", nargs=2, metavar=("NAME", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        name, size = args.child[0], parse_size(args.child[1])
        sys.stdout.write(json.dumps(measure(name, size, args.tiny, args.repeats, args.threads)) + "\n")
        return

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names = args.networks or list_networks()
    unknown = sorted({*names, args.baseline} - set(list_networks()))
    if unknown:
        parser.error(f"unknown networks {unknown}; registered: {list_networks()}")
    if args.baseline not in names:
        names = [args.baseline, *names]
    rows = []
    for size in args.sizes:
        results = {}
        for name in names:
            log.info("%s at %s ...", name, "x".join(map(str, size)))
            results[name] = run_child(name, size, args.tiny, args.repeats, args.threads, args.timeout)
        rows += [row(name, size, results[name], results[args.baseline]) for name in names]
    header = (
        f"{cpu_summary()}\n\n"
        f"CPU forward pass, batch 1, 1 input channel, 3 classes{', tiny variants' if args.tiny else ''}; "
        f"torch {torch.__version__}, {args.threads} threads; forward time the median of {args.repeats} passes; "
        f"baseline {args.baseline} at the same input size, measured in this run.\n\n"
    )
    text = header + table(rows)
    sys.stdout.write(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
