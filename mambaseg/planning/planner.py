"""The experiment planner: target spacing, configurations, normalisation, network topology, patch and batch size.

It follows nnU-Net's default (ResEnc) planner, with its memory estimate replaced by the byte model
of ``mambaseg.planning.memory`` and the network taken from the registry, whose entry gives the network's
topology rule (kwargs, padded patch and divisors for a wanted patch), memory model and minimum input size:

- target spacing: the median spacing; for anisotropic data (coarsest median spacing more than 3x
  the next and, along that axis, fewer than a third of the voxels of the others) the coarse axis
  gets the 10th percentile of its spacings instead, but never finer than the other axes.
- axes are transposed so the coarsest one comes first; ``2d`` works on the other two.
- ``2d`` is always planned; ``3d_fullres`` for 3-D data; ``3d_lowres`` when the ``3d_fullres``
  patch covers less than a quarter of the median image: the spacing is coarsened in steps of 3%
  (the coarse axes first until within 2x of the others) until the patch covers a quarter, and the
  configuration is dropped when the median image did not shrink at least twofold.
- ``3d_cascade_fullres`` is planned with every ``3d_lowres``: the ``3d_fullres`` plan (spacing, patch, batch,
  network) with ``previous_stage: "3d_lowres"`` and ``previous_stage_labels``, the foreground labels whose one-hot
  channels of the lowres prediction the network takes after the image channels (nnU-Net v2's cascade).
- patch: the initial patch has the aspect ratio of 1/spacing and the volume of 256^3 (2048^2 in
  2D), clipped to the median shape (but not below the network's minimum input size) and padded by the
  network's topology rule; while batch size 2 does not fit the budget, the axis largest relative to the
  median shape is cut by one divisor step.
- batch: the most that fits the budget, capped so one batch covers at most 5% of the dataset's
  voxels, and at least 2.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mambaseg.networks import list_networks, network_entry
from mambaseg.networks.families import DEFAULT_NETWORK
from mambaseg.networks.registry import TopologyChoice
from mambaseg.planning.fingerprint import Fingerprint
from mambaseg.planning.memory import MemoryEstimate, estimate_memory
from mambaseg.planning.plans import ConfigurationPlan, Normalization, Plans, cascade_labels

logger = logging.getLogger(__name__)

ANISOTROPY_THRESHOLD = 3.0
LOWRES_THRESHOLD = 0.25
LOWRES_SPACING_STEP = 1.03
MAX_DATASET_COVERED = 0.05
MIN_BATCH_SIZE = 2
GIB = 2**30
LOWRES = "3d_lowres"
CASCADE = "3d_cascade_fullres"


class PlanningError(ValueError):
    """The dataset or the budget allows no plan; the message names the value at fault."""


def target_spacing(spacings: np.ndarray, shapes: np.ndarray, threshold: float = ANISOTROPY_THRESHOLD) -> np.ndarray:
    """The ``3d_fullres`` spacing from per-case spacings and cropped shapes, (n_cases, n_axes) each."""
    target = np.percentile(spacings, 50, axis=0)
    median_size = np.percentile(shapes, 50, axis=0)
    worst = int(np.argmax(target))
    others = [a for a in range(len(target)) if a != worst]
    other_spacing = max(target[a] for a in others)
    aniso_spacing = target[worst] > threshold * other_spacing
    aniso_voxels = median_size[worst] * threshold < min(median_size[a] for a in others)
    if aniso_spacing and aniso_voxels:
        coarse = float(np.percentile(spacings[:, worst], 10))
        if coarse < other_spacing:
            coarse = max(other_spacing, coarse) + 1e-5
        target[worst] = coarse
    return target


def transpose_for(spacing: Sequence[float]) -> tuple[list[int], list[int]]:
    """Axis order putting the coarsest spacing first, and its inverse."""
    first = int(np.argmax(spacing))
    forward = [first] + [a for a in range(len(spacing)) if a != first]
    return forward, [forward.index(a) for a in range(len(spacing))]


def normalization_for(fingerprint: Fingerprint) -> list[Normalization]:
    """One normalisation per channel from its name (nnU-Net's mapping) and the foreground statistics."""
    use_mask = fingerprint.median_relative_size_after_crop < 0.75
    schemes = []
    for channel, name in sorted(fingerprint.channel_names.items(), key=lambda item: int(item[0])):
        key = name.strip().lower()
        if key == "ct":
            stats = fingerprint.intensities[channel]
            values = (stats.percentile_00_5, stats.percentile_99_5, stats.mean, stats.std)
            if not all(math.isfinite(value) for value in values):
                raise PlanningError(
                    f"fingerprint of {fingerprint.dataset_name}: channel {channel} ({name}) has no foreground "
                    "intensities to set its CT normalisation from (every label map is empty?)"
                )
            params = {
                "clip_low": stats.percentile_00_5,
                "clip_high": stats.percentile_99_5,
                "mean": stats.mean,
                "std": stats.std,
            }
            schemes.append(Normalization("ct", params))
        elif key in ("nonorm", "none"):
            schemes.append(Normalization("none"))
        elif key == "rescale_to_0_1":
            schemes.append(Normalization("rescale_0_1"))
        elif key == "rgb_to_0_1":
            schemes.append(Normalization("rgb_0_1"))
        else:
            schemes.append(Normalization("zscore", {"use_mask": use_mask}))
    return schemes


def initial_patch(spacing: Sequence[float], median_shape: Sequence[float]) -> list[int]:
    """A patch with the aspect ratio of 1/spacing and 256^3 (2048^2) voxels, clipped to the median shape."""
    inverse = 1 / np.asarray(spacing, dtype=np.float64)
    volume = 256.0**3 if len(spacing) == 3 else 2048.0**2
    scaled = inverse * (volume / np.prod(inverse)) ** (1 / len(spacing))
    return [min(round(s), int(m)) for s, m in zip(scaled, median_shape, strict=True)]


def _candidate(network: str, spacing: Sequence[float], patch: Sequence[int]) -> TopologyChoice:
    """The topology rule of ``network`` for a wanted patch, its ValueError as a PlanningError."""
    try:
        return network_entry(network).topology(spacing, patch)
    except ValueError as err:
        raise PlanningError(str(err)) from err


def _shrink(network: str, spacing: Sequence[float], median: Sequence[float], choice: TopologyChoice) -> TopologyChoice:
    """One step down: the axis largest relative to the median shape loses one divisor step (nnU-Net's rule).

    The step is the divisor along that axis of the topology a patch one current divisor smaller gets (for a U-Net,
    fewer pooling steps may fit it); no axis goes below the network's minimum input size.
    """
    patch, divisors = choice.patch_size, choice.divisors
    minimum = network_entry(network).min_input_size(len(patch))
    ratios = [p / m for p, m in zip(patch, median, strict=True)]
    shrinkable = [a for a in range(len(patch)) if patch[a] - divisors[a] >= max(1, minimum[a])]
    if not shrinkable:
        raise PlanningError(f"{network}: patch {patch} cannot shrink further")
    top = max(ratios[a] for a in shrinkable)
    axis = max(a for a in shrinkable if ratios[a] == top)
    trial = list(patch)
    trial[axis] -= divisors[axis]
    smaller = list(patch)
    smaller[axis] -= _candidate(network, spacing, trial).divisors[axis]
    return _candidate(network, spacing, smaller)


def plan_patch_and_batch(
    network: str,
    spacing: Sequence[float],
    median_shape: Sequence[float],
    in_channels: int,
    num_classes: int,
    budget_bytes: float,
    dataset_voxels: float,
    max_dataset_covered: float = MAX_DATASET_COVERED,
) -> tuple[dict[str, Any], list[int], int, MemoryEstimate]:
    """The largest patch (then batch) of ``network`` whose training step fits ``budget_bytes``.

    Returns:
        The network kwargs, the patch size, the batch size and the memory estimate at that patch.
    """
    dims = len(spacing)
    median = [float(m) for m in median_shape]
    minimum = network_entry(network).min_input_size(dims)
    wanted = [max(p, m) for p, m in zip(initial_patch(spacing, median), minimum, strict=True)]
    choice = _candidate(network, spacing, wanted)
    estimate = estimate_memory(network, dims, in_channels, num_classes, choice.kwargs, choice.patch_size)
    while estimate.total_bytes(MIN_BATCH_SIZE) > budget_bytes:
        try:
            choice = _shrink(network, spacing, median, choice)
        except PlanningError as err:
            raise PlanningError(
                f"{network}: no patch fits gpu_memory_gb={budget_bytes / GIB:.3g} GB with batch size {MIN_BATCH_SIZE}; "
                f"the smallest tried, {choice.patch_size}, needs {estimate.total_bytes(MIN_BATCH_SIZE) / GIB:.2f} GB"
            ) from err
        estimate = estimate_memory(network, dims, in_channels, num_classes, choice.kwargs, choice.patch_size)
    kwargs, patch = choice.kwargs, choice.patch_size
    covered = round(dataset_voxels * max_dataset_covered / math.prod(patch))
    batch = max(min(estimate.max_batch_size(budget_bytes), covered), MIN_BATCH_SIZE)
    return kwargs, patch, batch, estimate


def _configuration(
    network: str,
    spacing: Sequence[float],
    median_shape: Sequence[float],
    fingerprint: Fingerprint,
    budget_bytes: float,
    dataset_voxels: float,
    normalization: list[Normalization],
) -> ConfigurationPlan:
    in_channels = len(fingerprint.channel_names)
    kwargs, patch, batch, estimate = plan_patch_and_batch(
        network, spacing, median_shape, in_channels, fingerprint.num_classes, budget_bytes, dataset_voxels
    )
    return ConfigurationPlan(
        spatial_dims=len(spacing),
        spacing=[float(s) for s in spacing],
        median_shape=[float(m) for m in median_shape],
        patch_size=[int(p) for p in patch],
        batch_size=int(batch),
        network=network,
        network_kwargs=kwargs,
        normalization=normalization,
        estimated_memory_gb=round(estimate.total_bytes(batch) / GIB, 3),
    )


def _lowres(
    fullres: ConfigurationPlan,
    network: str,
    fingerprint: Fingerprint,
    budget_bytes: float,
    normalization: list[Normalization],
) -> ConfigurationPlan | None:
    """nnU-Net's ``3d_lowres`` search, or None when the full-resolution patch is large enough."""
    median = np.asarray(fullres.median_shape, dtype=np.float64)
    full_spacing = np.asarray(fullres.spacing, dtype=np.float64)
    spacing = full_spacing.copy()
    median_voxels = float(np.prod(median))
    patch_voxels = float(np.prod(fullres.patch_size))
    plan = None
    while patch_voxels / median_voxels < LOWRES_THRESHOLD:
        coarse = spacing.max() / spacing > 2
        spacing[coarse if coarse.any() else slice(None)] *= LOWRES_SPACING_STEP
        shape = full_spacing / spacing * median
        median_voxels = float(np.prod(shape))
        dataset_voxels = median_voxels * len(fingerprint.cases)
        plan = _configuration(
            network, spacing, [round(s) for s in shape], fingerprint, budget_bytes, dataset_voxels, normalization
        )
        patch_voxels = float(np.prod(plan.patch_size))
    if plan is None or float(np.prod(median)) / median_voxels < 2:
        return None
    return plan


def fingerprint_summary(fingerprint: Fingerprint) -> dict[str, Any]:
    """What plans keep of the fingerprint: everything but the cases and notes."""
    summary = fingerprint.to_dict()
    summary.pop("cases")
    summary.pop("notes")
    return summary


def cascade_plan(fullres: ConfigurationPlan, labels: dict[str, Any]) -> ConfigurationPlan:
    """``3d_cascade_fullres``: the ``3d_fullres`` plan taking the one-hot ``3d_lowres`` prediction as extra input.

    The foreground labels are every label value above 0, those inside a region's list included (a region-based
    lowres mask holds the labels its regions are painted as), as nnU-Net's label manager counts them.
    """
    return dataclasses.replace(fullres, previous_stage=LOWRES, previous_stage_labels=cascade_labels(labels))


def plan_experiment(fingerprint: Fingerprint, gpu_memory_gb: float = 8.0, network: str | None = None) -> Plans:
    """Plans for every configuration the dataset warrants.

    Args:
        fingerprint: the dataset fingerprint.
        gpu_memory_gb: the training memory budget in GiB.
        network: a registry name for every configuration (default: ``networks.families.DEFAULT_NETWORK``).
    """
    if network is not None and network not in list_networks():
        raise PlanningError(f"network {network!r} is not registered; choose from {', '.join(list_networks())}")
    if not (math.isfinite(gpu_memory_gb) and gpu_memory_gb > 0):
        raise PlanningError(f"gpu_memory_gb must be a positive number of GB, got {gpu_memory_gb}")
    budget = gpu_memory_gb * GIB
    spacings, shapes = fingerprint.spacings, fingerprint.shapes_after_crop
    spacing = target_spacing(spacings, shapes)
    forward, backward = transpose_for(spacing) if len(spacing) == 3 else ([0, 1], [0, 1])
    new_shapes = np.round(shapes * spacings / spacing)
    median = np.median(new_shapes, axis=0)[forward]
    spacing_t = spacing[forward]
    dataset_voxels = float(np.prod(median)) * len(fingerprint.cases)
    normalization = normalization_for(fingerprint)
    configurations: dict[str, ConfigurationPlan] = {}
    if len(spacing) == 3 and median[0] > 1:
        name = network or DEFAULT_NETWORK
        fullres = _configuration(name, spacing_t, median, fingerprint, budget, dataset_voxels, normalization)
        lowres = _lowres(fullres, name, fingerprint, budget, normalization)
        if lowres is not None:
            lowres.next_stage = CASCADE
            configurations[LOWRES] = lowres
        configurations["3d_fullres"] = fullres
        if lowres is not None:
            configurations[CASCADE] = cascade_plan(fullres, fingerprint.labels)
    plane = slice(1, None) if len(spacing) == 3 else slice(None)
    configurations["2d"] = _configuration(
        network or DEFAULT_NETWORK,
        spacing_t[plane],
        median[plane],
        fingerprint,
        budget,
        dataset_voxels,
        normalization,
    )
    summary = fingerprint_summary(fingerprint)
    for name, cfg in configurations.items():
        logger.info(
            "%s: %s, spacing %s, patch %s, batch %d, ~%.1f GB",
            name,
            cfg.network,
            cfg.spacing,
            cfg.patch_size,
            cfg.batch_size,
            cfg.estimated_memory_gb,
        )
    return Plans(
        dataset_name=fingerprint.dataset_name,
        channel_names=dict(fingerprint.channel_names),
        labels=dict(fingerprint.labels),
        num_classes=fingerprint.num_classes,
        gpu_memory_gb=float(gpu_memory_gb),
        transpose_forward=forward,
        transpose_backward=backward,
        fingerprint=summary,
        configurations=configurations,
        regions_class_order=fingerprint.regions_class_order,
    )
