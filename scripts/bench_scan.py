"""Selective-scan speed: forward and forward+backward times of each backend, with ratios, in one run.

Shapes (b, d, l, n), with Mamba's options (per-step B and C, D, z, delta_bias, softplus):
    SegMamba stage 0           (2, 96, 262144, 16)
    VMamba stage-1 direction   (2, 192, 4096, 16)
    U-Mamba bottleneck         (2, 640, 1000, 16)

On the CPU: the PyTorch reference (timed on a shorter l and scaled linearly, labelled so) against the
compiled cpu kernel. On a GPU: triton against mamba_ssm's CUDA kernel where it is installed.

Then the kernel's forward against a plain fused C loop (``scan_plain_loop.c``: one (b, d) pair per OpenMP
iteration, sequential over l, libm's expf, built with -O3 -march=<level> -fopenmp, no fast-math) at
(2, 96, 65536, 16) and at the SegMamba shape, for each instruction-set level this CPU runs (avx2, avx512):
the kernel built for that level (``MAMBASEG_CPU_ISA``) and the loop compiled for the same one, in this run.
Every figure, the reference's included, is the median of --repeats timed runs after one warm-up run; the
script prints that count and the CPU (model, avx2 / avx512f / amx) with the tables.
Usage: python scripts/bench_scan.py [--repeats 3] [--reference-length 2048] [--output docs/bench_scan.md]
       python scripts/bench_scan.py --repeats 1 --reference-length 64 --shapes "U-Mamba bottleneck"  # a quick check
       python scripts/bench_scan.py --no-plain-loop  # without the plain fused C loop comparison
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from mambaseg.ops import selective_scan
from mambaseg_kernels.cpu import X86_ARCH_FLAGS, load_cpu_kernels, supported_isa_levels

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine_info import cpu_summary  # noqa: E402

SHAPES = {
    "SegMamba stage 0": (2, 96, 262144, 16),
    "VMamba stage-1 direction": (2, 192, 4096, 16),
    "U-Mamba bottleneck": (2, 640, 1000, 16),
}
CPU_FORWARD_TARGET_S = 0.5  # SegMamba shape, per direction, 2 cores
BACKWARD_TARGET_RATIO = 3.0  # backward time / forward time
PLAIN_LOOP_SOURCE = Path(__file__).resolve().parent / "scan_plain_loop.c"
PLAIN_LOOP_SHAPES = {"issue 14 shape": (2, 96, 65536, 16), "SegMamba stage 0": SHAPES["SegMamba stage 0"]}
PLAIN_LOOP_LEVELS = ("avx2", "avx512")
PLAIN_LOOP_TARGET_RATIO = 0.3  # kernel forward / plain loop forward


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


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table of ``rows`` under ``header``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


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
    return format_table(header, rows)


def build_plain_loop(level: str, folder: Path) -> ctypes.CDLL:
    """``scan_plain_loop.c`` compiled with -O3, the kernel's -march for ``level`` and -fopenmp, loaded."""
    compiler = os.environ.get("CC") or shutil.which("gcc") or "cc"
    library = folder / f"plain_loop_{level}.so"
    command = [compiler, "-O3", *X86_ARCH_FLAGS[level], "-fopenmp", "-shared", "-fPIC"]
    subprocess.run([*command, "-o", str(library), str(PLAIN_LOOP_SOURCE), "-lm"], check=True)
    lib = ctypes.CDLL(str(library))
    lib.plain_scan_fwd.argtypes = [ctypes.c_void_p] * 9 + [ctypes.c_int64] * 4 + [ctypes.c_int]
    lib.plain_scan_fwd.restype = ctypes.c_int
    return lib


def time_against_plain_loop(
    kernels: object, lib: ctypes.CDLL, shape: tuple[int, int, int, int], repeats: int
) -> tuple[float, float, float]:
    """(kernel forward s, plain loop forward s, largest difference of their outputs) at ``shape``."""
    x = make_inputs(*shape, device="cpu")
    out = torch.empty_like(x["u"])
    args = [x[k].data_ptr() for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    B, C = x["B"].unsqueeze(1), x["C"].unsqueeze(1)  # (b, 1, n, l): one group

    def plain() -> None:
        if lib.plain_scan_fwd(*args, out.data_ptr(), *shape, torch.get_num_threads()) != 0:
            raise RuntimeError("scan_plain_loop.c: state size above its MAX_STATE")

    def kernel() -> torch.Tensor:
        return kernels.selective_scan_fwd(
            x["u"], x["delta"], x["A"], B, C, x["D"], x["z"], x["delta_bias"], True, False
        )[0]

    kernel_s, plain_s = median_time(kernel, repeats, "cpu"), median_time(plain, repeats, "cpu")
    return kernel_s, plain_s, (kernel() - out).abs().max().item()


def plain_loop_rows(levels: list[str], repeats: int) -> list[list[str]]:
    """Per level and shape: the kernel's forward, the plain loop's, their ratio and their largest difference."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for level in levels:
            kernels = load_cpu_kernels(level)
            lib = build_plain_loop(level, Path(tmp))
            for label, shape in PLAIN_LOOP_SHAPES.items():
                kernel_s, plain_s, diff = time_against_plain_loop(kernels, lib, shape, repeats)
                ratio = kernel_s / plain_s
                verdict = "met" if ratio <= PLAIN_LOOP_TARGET_RATIO else "NOT met"
                rows.append(
                    [
                        level,
                        label,
                        str(shape),
                        f"{kernel_s:.3f}",
                        f"{plain_s:.3f}",
                        f"{ratio:.2f} ({verdict})",
                        f"{diff:.1e}",
                    ]
                )
    return rows


def plain_loop_table(rows: list[list[str]]) -> str:
    header = [
        "ISA level",
        "shape",
        "(b, d, l, n)",
        "kernel fwd s",
        "plain loop fwd s",
        f"kernel / plain loop (target ≤ {PLAIN_LOOP_TARGET_RATIO})",
        "max abs difference",
    ]
    return format_table(header, rows)


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
    parser.add_argument(
        "--no-plain-loop", dest="plain_loop", action="store_false", help="skip the plain fused C loop comparison"
    )
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
    levels = [level for level in PLAIN_LOOP_LEVELS if level in supported_isa_levels()]
    if args.plain_loop and levels:
        table = plain_loop_table(plain_loop_rows(levels, args.repeats))
        title = f"CPU kernel against the plain fused C loop, forward, {torch.get_num_threads()} threads"
        sections.append(f"{title}\n\n{table}")
    elif args.plain_loop:
        sections.append("Plain-loop comparison: this CPU runs neither the avx2 nor the avx512 level.")
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
