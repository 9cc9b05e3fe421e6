"""Training-memory model: what the planner fits patch and batch sizes into.

The estimate of one training step with batch size b is::

    total = parameters * 4 B * (1 weight + 1 gradient + OPTIMIZER_STATES) + STEP_OVERHEAD
            + b * activation_bytes_per_sample

The parameters and the activation bytes come from the network's registry entry (``NetworkEntry.memory``): U-Net
families count their feature maps stage by stage, fixed-topology networks their leaf modules' outputs, each with
constants fitted to the measured peak memory of forward + backward on the CPU (``memory_probe``); see
``mambaseg.networks.footprint``. ``STEP_OVERHEAD`` is the part of a step that does not grow with the patch (the
CPU runtime's working memory; a GPU has its context and workspaces instead), fitted with the U-Net constants.
Gradients are counted; the optimizer states (two per weight, as Adam) are added for planning only, since the
probe does not step an optimizer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mambaseg.networks import network_entry
from mambaseg.networks.footprint import BYTES_PER_VALUE

OPTIMIZER_STATES = 2
STEP_OVERHEAD = 36 * 2**20


@dataclass(frozen=True)
class MemoryEstimate:
    """Parameters and per-sample activation bytes of one network at one patch size."""

    parameters: int
    activation_bytes_per_sample: float

    def step_bytes(self, batch_size: int) -> float:
        """Gradients plus activations: what a forward + backward adds to the resident weights."""
        return self.parameters * BYTES_PER_VALUE + STEP_OVERHEAD + batch_size * self.activation_bytes_per_sample

    def total_bytes(self, batch_size: int) -> float:
        """Weights, gradients, optimizer states and activations of one training step."""
        fixed = self.parameters * BYTES_PER_VALUE * (2 + OPTIMIZER_STATES) + STEP_OVERHEAD
        return fixed + batch_size * self.activation_bytes_per_sample

    def max_batch_size(self, budget_bytes: float) -> int:
        """The largest batch size whose ``total_bytes`` fits the budget (0 when none does)."""
        free = budget_bytes - self.total_bytes(0)
        return max(0, math.floor(free / self.activation_bytes_per_sample))


def estimate_memory(
    network: str,
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    kwargs: dict[str, Any],
    patch_size: Sequence[int],
) -> MemoryEstimate:
    """The memory model of ``network`` built with ``kwargs`` at ``patch_size`` (see the module doc)."""
    footprint = network_entry(network).memory(spatial_dims, in_channels, num_classes, kwargs, patch_size)
    return MemoryEstimate(footprint.parameters, footprint.activation_bytes_per_sample)
