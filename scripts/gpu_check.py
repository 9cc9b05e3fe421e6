"""GPU checks of mambaseg on one CUDA device; run by ``scripts/gpu_check.sh`` (or directly, after setup).

Sections, each in its own subprocess with its own timeout, so that one failure or hang does not stop the others:

- ``device``: the GPU model, torch, CUDA, triton and mamba_ssm versions.
- ``scan``: the triton selective scan against the float64 reference (max abs / rel error of the output and of
  every input gradient), then its speed against mamba_ssm's CUDA kernel when mamba_ssm imports, else against the
  PyTorch reference on the GPU. Shapes are ``SHAPES`` of ``scripts/bench_scan.py`` (b, d, l, n):
  SegMamba stage 0 (2, 96, 262144, 16), VMamba stage-1 direction (2, 192, 4096, 16), U-Mamba bottleneck
  (2, 640, 1000, 16). The float64 reference is a Python loop over l, so the correctness check runs at
  ``l = min(l, --check-length)`` (stated in the output), the speed at the full shapes.
- ``train``: one training step (forward, deep-supervision cross-entropy, backward, SGD step) under bf16 autocast
  of ``umamba_bot`` (topology from its planner rule at 1 mm spacing) and ``segmamba`` (its fixed topology), 3-D,
  1 input channel, 3 classes, patch 128^3 and batch 2 (``--patch``, ``--batch``): median seconds per step over
  ``--repeats`` steps after 2 warm-ups, and ``torch.cuda.max_memory_allocated``; then the planner's estimate
  (``mambaseg.planning.memory.estimate_memory``: its ``total_bytes`` less one optimiser state, as SGD keeps one
  momentum per weight, against the measured peak; and the planner's ``total_bytes`` itself), in bf16 and float32.
- ``ddp``: one DistributedDataParallel step of a small ``unet_resenc`` with the nccl backend, world size 1
  (``torch.distributed`` initialised in the subprocess with a local TCP store), and the all-reduced gradient
  checked against the gradient of the same step without DDP.

Everything printed is also written to ``OUT/gpu_check.txt`` (``$OUT`` when set, else ``gpu_check_out/``). Without
a CUDA device each section prints one ``no CUDA device`` line and the script exits 0 at once.

Usage: python scripts/gpu_check.py [--sections device scan train ddp] [--timeout S] [--budget 420] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

SECTIONS = ("device", "scan", "train", "ddp")
DEFAULT_TIMEOUTS = {"device": 45, "scan": 150, "train": 150, "ddp": 60}
SCRIPTS = Path(__file__).resolve().parent
NETWORK_PATCH = (128, 128, 128)


def output_dir(explicit: str | None) -> Path:
    """Where the log goes: ``--out``, else ``$OUT``, else ``gpu_check_out/`` in the current directory."""
    if explicit:
        return Path(explicit)
    return Path(os.environ["OUT"]) if os.environ.get("OUT") else Path("gpu_check_out")


class Log:
    """Prints and appends each line to a file as it comes, so that a killed run keeps what it printed."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.file = path.open("w")

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.file.write(text + "\n")
        self.file.flush()


def _median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    import torch

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# --- sections (each runs in a child process with CUDA available) ---------------------------------------------------


def section_device(args: argparse.Namespace) -> None:
    import torch

    props = torch.cuda.get_device_properties(0)
    print(f"GPU: {props.name}, {props.total_memory / 2**30:.1f} GiB, compute capability {props.major}.{props.minor}")
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    for module in ("triton", "mamba_ssm"):
        try:
            version = __import__(module).__version__
        except Exception as err:  # noqa: BLE001 - any import failure is reported, not raised
            version = f"not importable ({type(err).__name__}: {str(err)[:100]})"
        print(f"{module}: {version}")


def _relative_error(a, b) -> tuple[float, float]:
    diff = (a.double() - b.double()).abs().max().item()
    scale = b.double().abs().max().item()
    return diff, diff / scale if scale else float("inf")


def section_scan(args: argparse.Namespace) -> None:
    import torch
    from bench_scan import SHAPES, make_inputs

    from mambaseg.ops import selective_scan, selective_scan_reference

    print(f"GPU: {torch.cuda.get_device_name()}")
    print(f"correctness: triton (float32) against selective_scan_reference in float64, l capped at {args.check_length}")
    for label, (b, d, length, n) in SHAPES.items():
        check_length = min(length, args.check_length)
        inputs = make_inputs(b, d, check_length, n, device="cuda")
        dout = torch.randn_like(inputs["u"])
        leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
        y = selective_scan(**leaves, delta_softplus=True, backend="triton")
        y.backward(dout)
        ref_leaves = {k: v.double().clone().requires_grad_(True) for k, v in inputs.items()}
        y_ref = selective_scan_reference(**ref_leaves, delta_softplus=True)
        y_ref.backward(dout.double())
        abs_err, rel_err = _relative_error(y, y_ref)
        print(f"  {label} (b={b}, d={d}, l={check_length}, n={n}): forward max abs {abs_err:.2e}, rel {rel_err:.2e}")
        worst = max(
            ((name, *_relative_error(leaves[name].grad, ref_leaves[name].grad)) for name in leaves),
            key=lambda item: item[2],
        )
        grads = ", ".join(
            f"d{name} {_relative_error(leaves[name].grad, ref_leaves[name].grad)[1]:.1e}" for name in leaves
        )
        print(f"    backward rel: {grads}; worst d{worst[0]} max abs {worst[1]:.2e}, rel {worst[2]:.2e}")
        del leaves, ref_leaves, y, y_ref
        torch.cuda.empty_cache()

    try:
        import mamba_ssm  # noqa: F401

        baseline = "mamba_ssm"
    except Exception as err:  # noqa: BLE001
        baseline = "reference"
        print(f"mamba_ssm not importable ({type(err).__name__}); the speed baseline is the PyTorch reference (float32)")
    print(f"speed: median of {args.repeats} after a warm-up, float32, seconds; baseline {baseline}")
    for label, shape in SHAPES.items():
        run_shape = shape
        if baseline == "reference" and shape[2] > args.reference_length:
            run_shape = (*shape[:2], args.reference_length, shape[3])
        scale = shape[2] / run_shape[2]
        figures = {}
        for backend, s in ((baseline, run_shape), ("triton", shape)):
            inputs = make_inputs(*s, device="cuda")
            leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
            dout = torch.randn_like(inputs["u"])

            def forward(inputs=inputs, backend=backend) -> None:
                with torch.no_grad():
                    selective_scan(**inputs, delta_softplus=True, backend=backend)

            def forward_backward(leaves=leaves, dout=dout, backend=backend) -> None:
                selective_scan(**leaves, delta_softplus=True, backend=backend).backward(dout)

            factor = scale if backend == "reference" else 1.0
            figures[backend] = (
                _median_seconds(forward, args.repeats) * factor,
                _median_seconds(forward_backward, args.repeats) * factor,
            )
            del inputs, leaves, dout
            torch.cuda.empty_cache()
        (bf, bt), (tf, tt) = figures[baseline], figures["triton"]
        note = f" (baseline timed at l={run_shape[2]}, scaled x{scale:g})" if scale != 1 else ""
        print(
            f"  {label} {shape}: forward {baseline} {bf:.4f} triton {tf:.4f} (triton/{baseline} {tf / bf:.2f}); "
            f"fwd+bwd {baseline} {bt:.4f} triton {tt:.4f} (triton/{baseline} {tt / bt:.2f}){note}"
        )


def _build_network(name: str, patch: tuple[int, ...]):
    from mambaseg.networks import create, network_entry

    choice = network_entry(name).topology([1.0] * len(patch), list(patch))
    patch = tuple(choice.patch_size)
    return create(name, len(patch), 1, 3, **choice.kwargs), choice.kwargs, patch


def _train_step_fn(net, x, target, optimizer, dtype):
    import torch
    import torch.nn.functional as F

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
            out = net(x)
            outputs = out if isinstance(out, list) else [out]
            loss = 0.0
            for o in outputs:
                t = (
                    target
                    if o.shape[2:] == target.shape[1:]
                    else F.interpolate(target[:, None].float(), size=o.shape[2:], mode="nearest")[:, 0].long()
                )
                loss = loss + F.cross_entropy(o.float(), t)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def section_train(args: argparse.Namespace) -> None:
    import torch

    from mambaseg.networks.footprint import BYTES_PER_VALUE
    from mambaseg.planning.memory import estimate_memory

    print(f"GPU: {torch.cuda.get_device_name()}")
    wanted = tuple(args.patch)
    print(
        f"training step: 3-D, 1 channel, 3 classes, batch {args.batch}, wanted patch {wanted}, SGD momentum 0.99, "
        f"deep-supervision cross-entropy; median of {args.repeats} steps after 2 warm-ups"
    )
    for name in args.networks:
        try:
            for label, dtype in (("bf16 AMP", torch.bfloat16), ("float32", torch.float32)):
                torch.manual_seed(0)
                net, kwargs, patch = _build_network(name, wanted)
                net = net.cuda().train()
                x = torch.randn(args.batch, 1, *patch, device="cuda")
                target = torch.randint(0, 3, (args.batch, *patch), device="cuda")
                optimizer = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.99, nesterov=True)
                step = _train_step_fn(net, x, target, optimizer, dtype)
                step()  # builds kernels and the optimiser state before the peak is reset
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                seconds = _median_seconds(step, args.repeats, warmup=1)
                peak = torch.cuda.max_memory_allocated()
                estimate = estimate_memory(name, 3, 1, 3, kwargs, patch)
                params = sum(p.numel() for p in net.parameters())
                planned = estimate.total_bytes(args.batch)
                # what the model says this step holds: the planner's total less one of its two Adam states,
                # since SGD with momentum keeps one
                this_step = planned - params * BYTES_PER_VALUE
                print(
                    f"  {name} patch {patch} {label}: {seconds:.3f} s/step, peak allocated {peak / 2**30:.2f} GiB; "
                    f"model of this step (weights, gradients, momentum, activations) {this_step / 2**30:.2f} GiB, "
                    f"measured/model {peak / this_step:.2f}; planner total (2 Adam states) {planned / 2**30:.2f} "
                    f"GiB; {params / 1e6:.1f} M parameters"
                )
                del net, x, target, optimizer, step
                torch.cuda.empty_cache()
        except Exception as err:  # noqa: BLE001 - the next network still runs
            print(f"  {name}: FAILED {type(err).__name__}: {str(err)[:300]}")


def section_ddp(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from mambaseg.networks import create, network_entry

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    torch.cuda.set_device(0)
    start = time.perf_counter()
    dist.init_process_group("nccl", rank=0, world_size=1, device_id=torch.device("cuda", 0))
    print(f"GPU: {torch.cuda.get_device_name()}; nccl {'.'.join(map(str, torch.cuda.nccl.version()))}")
    print(f"init_process_group(nccl, world size 1): {time.perf_counter() - start:.2f} s")
    patch = (64, 64, 64)
    choice = network_entry("unet_resenc").topology([1.0] * 3, list(patch))
    torch.manual_seed(0)
    plain = create("unet_resenc", 3, 1, 3, **choice.kwargs).cuda()
    wrapped = create("unet_resenc", 3, 1, 3, **choice.kwargs).cuda()
    wrapped.load_state_dict(plain.state_dict())
    ddp = DistributedDataParallel(wrapped, device_ids=[0])
    x = torch.randn(2, 1, *choice.patch_size, device="cuda")

    def loss_of(module) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = module(x)
        outputs = out if isinstance(out, list) else [out]
        return sum(o.float().square().mean() for o in outputs)

    loss_of(plain).backward()
    torch.cuda.synchronize()
    start = time.perf_counter()
    loss_of(ddp).backward()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    worst = max(
        (a.grad - b.grad).abs().max().item() / max(b.grad.abs().max().item(), 1e-30)
        for a, b in zip(wrapped.parameters(), plain.parameters(), strict=True)
        if b.grad is not None
    )
    flag = torch.ones(1, device="cuda")
    dist.all_reduce(flag)
    print(
        f"unet_resenc patch {tuple(choice.patch_size)} batch 2, bf16: DDP forward+backward "
        f"{seconds:.3f} s (first step), "
        f"max relative gradient difference to the plain step {worst:.1e}, all_reduce of ones -> {flag.item():g}"
    )
    dist.destroy_process_group()


SECTION_FUNCTIONS = {"device": section_device, "scan": section_scan, "train": section_train, "ddp": section_ddp}


# --- driver --------------------------------------------------------------------------------------------------------


def cuda_state() -> tuple[bool, str]:
    """Whether torch sees a CUDA device, and a line saying why not."""
    try:
        import torch
    except Exception as err:  # noqa: BLE001
        return False, f"torch not importable ({type(err).__name__}: {err})"
    if not torch.cuda.is_available():
        build = f"torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}"
        return False, f"torch.cuda.is_available() is False ({build})"
    return True, ""


def run_section(name: str, args: argparse.Namespace, timeout: float, log: Log) -> bool:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", name]
    command += ["--repeats", str(args.repeats), "--check-length", str(args.check_length)]
    command += ["--reference-length", str(args.reference_length), "--batch", str(args.batch)]
    command += ["--patch", *map(str, args.patch), "--networks", *args.networks]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SCRIPTS), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired as err:
        partial = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        for line in partial.splitlines():
            log(f"[{name}] {line}")
        log(f"[{name}] TIMED OUT after {timeout:.0f} s")
        return False
    for line in done.stdout.splitlines():
        log(f"[{name}] {line}")
    if done.returncode != 0:
        for line in done.stderr.strip().splitlines()[-15:]:
            log(f"[{name}] stderr: {line}")
        log(f"[{name}] FAILED (exit {done.returncode}) after {time.perf_counter() - start:.0f} s")
        return False
    log(f"[{name}] done in {time.perf_counter() - start:.0f} s")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--timeout", type=float, help="seconds per section (default: each section's own)")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds for all sections together")
    parser.add_argument("--out", help="folder of gpu_check.txt (default: $OUT, else gpu_check_out)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per figure (median reported)")
    parser.add_argument("--check-length", type=int, default=4096, help="longest l of the float64 correctness check")
    parser.add_argument("--reference-length", type=int, default=2048, help="longest l timed for the reference")
    parser.add_argument("--networks", nargs="+", default=["umamba_bot", "segmamba"])
    parser.add_argument("--patch", nargs=3, type=int, default=list(NETWORK_PATCH))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--child", choices=SECTIONS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        sys.path.insert(0, str(SCRIPTS))
        SECTION_FUNCTIONS[args.child](args)
        return 0

    log = Log(output_dir(args.out) / "gpu_check.txt")
    log(f"gpu_check: sections {' '.join(args.sections)}; log {log.path}")
    available, why = cuda_state()
    failures = 0
    deadline = time.monotonic() + args.budget
    for name in args.sections:
        if not available:
            log(f"[{name}] skipped: no CUDA device: {why}")
            continue
        timeout = min(args.timeout or DEFAULT_TIMEOUTS[name], deadline - time.monotonic())
        if timeout < 10:
            log(f"[{name}] skipped: out of time (--budget {args.budget:.0f} s spent)")
            failures += 1
        elif not run_section(name, args, timeout, log):
            failures += 1
    log(
        f"gpu_check: {len(args.sections) - failures if available else 0} of {len(args.sections)} sections ran"
        + ("" if available else " (no CUDA device)")
        + (f", {failures} failed" if failures else "")
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
