"""Selective-scan speed: forward and forward+backward times of each backend, with ratios, in one run.

Shapes (b, d, l, n), with Mamba's options (per-step B and C, D, z, delta_bias, softplus):
    SegMamba stage 0           (2, 96, 262144, 16)
    VMamba stage-1 direction   (2, 192, 4096, 16)
    U-Mamba bottleneck         (2, 640, 1000, 16)

On the CPU: the PyTorch reference (timed on a shorter l and scaled linearly, labelled so) against the
compiled cpu kernel. On a GPU: triton against mamba_ssm's CUDA kernel where it is installed.
Every figure, the reference's included, is the median of --repeats timed runs after one warm-up run; the
script prints that count and the CPU (model, avx2 / avx512f / amx) with the tables.
Usage: python scripts/bench_scan.py [--repeats 3] [--reference-length 2048] [--output docs/bench_scan.md]
       python scripts/bench_scan.py --repeats 1 --reference-length 64 --shapes "U-Mamba bottleneck"  # a quick check
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from mambaseg.ops import selective_scan

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine_info import cpu_summary  # noqa: E402

SHAPES = {
    "SegMamba stage 0": (2, 96, 262144, 16),
    "VMamba stage-1 direction": (2, 192, 4096, 16),
    "U-Mamba bottleneck": (2, 640, 1000, 16),
}
CPU_FORWARD_TARGET_S = 0.5  # SegMamba shape, per direction, 2 cores
BACKWARD_TARGET_RATIO = 3.0  # backward time / forward time


def make_inputs(b: int, d: int, length: int, n: int, device: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    tensors = {
        "u": torch.randn(b, d, length, generator=g),
        "delta": 0.5 * torch.randn(b, d, length, generator=g),
        "A": -torch.rand(d, n, generator=g),
        "B": torch.randn(b, n, length, generator=g),
        "C": torch.randn(b, n, length, generator=g),
        "D": torch.randn(d, generator=g),
        "z": torch.randn(b, d, length, generator=g),
        "delta_bias": torch.randn(d, generator=g),
    }
    return {k: v.to(device) for k, v in tensors.items()}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def median_time(fn: Callable[[], None], repeats: int, device: str) -> float:
    fn()  # warm-up: builds kernels, touches memory
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_backend(backend: str, shape: tuple[int, ...], device: str, repeats: int) -> tuple[float, float]:
    """(forward seconds without grad, forward+backward seconds)."""
    inputs = make_inputs(*shape, device=device)

    def forward() -> None:
        with torch.no_grad():
            selective_scan(**inputs, delta_softplus=True, backend=backend)

    leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    dout = torch.randn_like(inputs["u"])

    def forward_backward() -> None:
        y = selective_scan(**leaves, delta_softplus=True, backend=backend)
        y.backward(dout)

    return median_time(forward, repeats, device), median_time(forward_backward, repeats, device)


def bench_rows(
    backends: list[str], device: str, repeats: int, reference_length: int, shapes: list[str]
) -> list[list[str]]:
    rows = []
    for label in shapes:
        shape = SHAPES[label]
        baseline_fwd = baseline_total = None
        for backend in backends:
            run_shape, note = shape, ""
            if backend == "reference" and shape[2] > reference_length:
                run_shape = (*shape[:2], reference_length, shape[3])
                note = f" (timed at l={reference_length}, scaled ×{shape[2] / reference_length:g})"
            fwd, total = time_backend(backend, run_shape, device, repeats)
            scale = shape[2] / run_shape[2]
            fwd, total = fwd * scale, total * scale
            if baseline_fwd is None:
                baseline_fwd, baseline_total = fwd, total
            rows.append(
                [
                    label,
                    str(shape),
                    backend + note,
                    f"{fwd:.3f}",
                    f"{total:.3f}",
                    f"{(total - fwd) / fwd:.2f}",
                    f"{baseline_fwd / fwd:.1f}×",
                    f"{baseline_total / total:.1f}×",
                ]
            )
    return rows


def markdown_table(rows: list[list[str]]) -> str:
    header = [
        "shape",
        "(b, d, l, n)",
        "backend",
        "forward s",
        "fwd+bwd s",
        "bwd / fwd",
        "fwd speed-up",
        "fwd+bwd speed-up",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def gpu_backends() -> list[str]:
    backends = ["triton"]
    try:
        import mamba_ssm  # noqa: F401
    except ImportError:
        return backends
    return ["mamba_ssm", "triton"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure (median reported)")
    parser.add_argument("--reference-length", type=int, default=2048)
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES), help="which shapes")
    parser.add_argument("--output", help="also write the tables (markdown) to this file")
    args = parser.parse_args(argv)

    sections = [f"{cpu_summary()}\nEvery time is the median of {args.repeats} runs after a warm-up."]
    cpu_rows = bench_rows(["reference", "cpu"], "cpu", args.repeats, args.reference_length, args.shapes)
    seg = next((r for r in cpu_rows if r[0] == "SegMamba stage 0" and r[2] == "cpu"), None)
    verdict = "cpu targets: judged at the SegMamba shape, not run" if seg is None else ""
    fwd, total = (float(seg[3]), float(seg[4])) if seg else (1.0, 1.0)
    verdict = verdict or (
        f"cpu at the SegMamba shape: forward {fwd:.3f} s (target ≤ {CPU_FORWARD_TARGET_S} s: "
        f"{'met' if fwd <= CPU_FORWARD_TARGET_S else 'NOT met'}), backward {(total - fwd) / fwd:.2f}× forward "
        f"(target ≤ {BACKWARD_TARGET_RATIO}: {'met' if (total - fwd) / fwd <= BACKWARD_TARGET_RATIO else 'NOT met'})"
    )
    sections.append(f"CPU, {torch.get_num_threads()} threads, float32\n\n{markdown_table(cpu_rows)}\n\n{verdict}")
    if torch.cuda.is_available():
        gpu_rows = bench_rows(gpu_backends(), "cuda", args.repeats, args.reference_length, args.shapes)
        sections.append(f"GPU {torch.cuda.get_device_name()}, float32\n\n{markdown_table(gpu_rows)}")
    else:
        sections.append("GPU: no CUDA device here; the triton and mamba_ssm rows need one.")
    text = "\n\n".join(sections)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
