"""The memory model against measured peak memory of forward + backward on the CPU (``memory_probe``)."""

import sys

import pytest

from mambaseg.planning.memory import estimate_memory
from mambaseg.planning.memory_probe import measure_step_memory

SMALL = {"n_stages": 4, "features_per_stage": (8, 16, 32, 64), "strides": (1, 2, 2, 2)}
WIDE = {"n_stages": 4, "features_per_stage": (32, 64, 128, 256), "strides": (1, 2, 2, 2)}
MAMBA_HEAVY = {"n_stages": 2, "features_per_stage": (16, 64), "strides": (1, 2)}


def test_estimate_grows_with_patch_and_batch():
    small = estimate_memory("umamba_bot", 3, 1, 3, WIDE, (32, 32, 32))
    large = estimate_memory("umamba_bot", 3, 1, 3, WIDE, (64, 64, 64))
    assert large.activation_bytes_per_sample > 7 * small.activation_bytes_per_sample
    assert small.parameters == large.parameters
    assert small.total_bytes(4) > small.total_bytes(2) > small.step_bytes(2)
    assert small.max_batch_size(small.total_bytes(3)) == 3


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the probe reads /proc/self/status")
@pytest.mark.parametrize(
    ("network", "kwargs", "side"),
    [
        ("unet_resenc", SMALL, 32),
        ("unet_resenc", SMALL, 48),
        ("unet_resenc", WIDE, 32),
        ("umamba_bot", SMALL, 32),
        ("umamba_bot", SMALL, 48),
        ("umamba_bot", MAMBA_HEAVY, 32),
    ],
)
def test_model_matches_measured_peak_within_30_percent(network, kwargs, side):
    patch = (side,) * 3
    measured = measure_step_memory(network, 3, 1, 3, kwargs, patch, batch_size=2)
    estimated = estimate_memory(network, 3, 1, 3, kwargs, patch).step_bytes(2)
    assert abs(estimated / measured - 1) <= 0.30, (
        f"estimated {estimated / 2**20:.0f} MB, measured {measured / 2**20:.0f} MB"
    )
