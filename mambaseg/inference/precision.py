"""The precision networks predict in: float32, or autocast in a reduced precision the device computes natively.

The logits, their sums and the probabilities always stay float32; only the networks run under autocast (the
selective scan computes in float32 inside it).
"""

from __future__ import annotations

import torch

from mambaseg.nn.precision import native_autocast_dtype

PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}  # name -> autocast dtype
PRECISION_CHOICES = ("auto", *PRECISIONS)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None: float32); refuses one the device lacks natively.

    ``auto`` is the device's native reduced precision (``native_autocast_dtype``: bfloat16 on CPUs with
    AVX512_BF16 or AMX, float16 on CUDA) and float32 elsewhere.
    """
    if precision == "auto":
        return native_autocast_dtype(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision}: choose one of {', '.join(PRECISION_CHOICES)}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return None
    if device.type == "cuda":
        if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            raise ValueError(f"precision {precision}: {device} has no bfloat16; use float16 or float32")
        return dtype
    if device.type == "cpu" and dtype == torch.bfloat16 and native_autocast_dtype(device) == torch.bfloat16:
        return dtype
    reason = (
        "this CPU has no native bfloat16 (AVX512_BF16 or AMX-BF16): emulated, it is slower than float32"
        if device.type == "cpu" and dtype == torch.bfloat16
        else f"{precision} is not computed natively on {device.type}"
    )
    raise ValueError(f"precision {precision}: {reason}; use float32 (or auto)")
