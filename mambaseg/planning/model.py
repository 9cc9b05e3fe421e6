"""A network as a plan describes it: built by registry name with the plan's keyword arguments."""

from __future__ import annotations

from torch import nn

from mambaseg.networks import create
from mambaseg.planning.plans import ConfigurationPlan, Plans


def build_network(plans: Plans, plan: ConfigurationPlan, deep_supervision: bool = True) -> nn.Module:
    """The plan's network, by registry name and keyword arguments; a cascade stage takes its one-hot input too."""
    in_channels = len(plans.channel_names) + plan.extra_input_channels
    kwargs = {**plan.network_kwargs, "deep_supervision": deep_supervision}
    return create(plan.network, plan.spatial_dims, in_channels, plans.num_classes, **kwargs)


def mirror_axes_for(plan: ConfigurationPlan) -> tuple[int, ...]:
    """nnU-Net mirrors along every spatial axis of the patch, in training and at test time."""
    return tuple(range(plan.spatial_dims))
