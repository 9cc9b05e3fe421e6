"""Plans carried over from another dataset, so that a network trained on it can be fine-tuned on this one.

As nnU-Net's ``nnUNetv2_move_plans_between_datasets``: every configuration keeps the source's network and its
keyword arguments (the topology), patch size, batch size, target spacing, next stage and axis order, so that the
source's weights fit; the dataset's own fingerprint gives the dataset name, channel names, labels, the number of
classes, the normalisation (scheme from the channel names, CT statistics from its foreground) and the median shapes
at the kept spacings. The source must have the same number of input channels (the first layer must fit) and
dimensionality. The new plans record what they were derived from in ``plans_from``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from mambaseg.planning.fingerprint import Fingerprint
from mambaseg.planning.memory import estimate_memory
from mambaseg.planning.planner import GIB, PlanningError, fingerprint_summary, normalization_for
from mambaseg.planning.plans import PLANS_FROM_KEYS, ConfigurationPlan, Plans, validate_plans


def _median_shape(fingerprint: Fingerprint, forward: list[int], plan: ConfigurationPlan) -> list[float]:
    """The median cropped shape of the dataset's cases resampled to ``plan.spacing``, along the plan's axes."""
    axes = forward[len(forward) - plan.spatial_dims :]  # a 2d plan of 3-D data works on the last two
    resampled = np.round(
        fingerprint.shapes_after_crop[:, axes] * fingerprint.spacings[:, axes] / np.asarray(plan.spacing)
    )
    return [float(v) for v in np.median(resampled, axis=0)]


def transfer_plans(source: Plans, fingerprint: Fingerprint, plans_from: Mapping[str, str]) -> Plans:
    """Plans for the dataset of ``fingerprint`` with the configurations of ``source`` (see the module doc).

    Args:
        source: the plans of the dataset the weights come from.
        fingerprint: the fingerprint of the dataset to plan.
        plans_from: what to record of the source: its ``dataset`` name, plans ``file`` and that file's ``sha256``.

    Raises:
        PlanningError: the channel count or the dimensionality differ, naming both datasets.
    """
    target = fingerprint.dataset_name
    n_axes = fingerprint.spacings.shape[1]
    if len(source.transpose_forward) != n_axes:
        raise PlanningError(
            f"plans_from {plans_from['file']}: {source.dataset_name} is {len(source.transpose_forward)}-D and "
            f"{target} is {n_axes}-D; plans carry over between datasets of the same dimensionality only"
        )
    if len(source.channel_names) != len(fingerprint.channel_names):
        raise PlanningError(
            f"plans_from {plans_from['file']}: {source.dataset_name} has {len(source.channel_names)} input "
            f"channel(s) {source.channel_names} and {target} has {len(fingerprint.channel_names)} "
            f"{fingerprint.channel_names}; the first layer of its network would not fit"
        )
    normalization = normalization_for(fingerprint)
    in_channels, num_classes = len(fingerprint.channel_names), fingerprint.num_classes
    configurations = {}
    for name, plan in source.configurations.items():
        estimate = estimate_memory(
            plan.network, plan.spatial_dims, in_channels, num_classes, plan.network_kwargs, plan.patch_size
        )
        configurations[name] = dataclasses.replace(
            plan,
            median_shape=_median_shape(fingerprint, source.transpose_forward, plan),
            normalization=[dataclasses.replace(n, params=dict(n.params)) for n in normalization],
            estimated_memory_gb=round(estimate.total_bytes(plan.batch_size) / GIB, 3),
        )
    plans = Plans(
        dataset_name=target,
        channel_names=dict(fingerprint.channel_names),
        labels=dict(fingerprint.labels),
        num_classes=num_classes,
        gpu_memory_gb=source.gpu_memory_gb,
        transpose_forward=list(source.transpose_forward),
        transpose_backward=list(source.transpose_backward),
        fingerprint=fingerprint_summary(fingerprint),
        configurations=configurations,
        plans_from={key: str(plans_from[key]) for key in PLANS_FROM_KEYS},
        regions_class_order=fingerprint.regions_class_order,
    )
    validate_plans(plans, f"plans of {target} from {plans_from['file']}")
    return plans
