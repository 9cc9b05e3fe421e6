"""SegMamba's gated spatial convolution (GSC) for any ``spatial_dims``, as in its released code.

    x1  = act2(norm2(proj2(act(norm(proj(x))))))     two 3-conv-IN-ReLU, one after the other
    x2  = act3(norm3(proj3(x)))                       1-conv-IN-ReLU
    out = act4(norm4(proj4(x1 + x2))) + x             1-conv-IN-ReLU on the sum, then the residual

The release sums the two paths (its paper draws a gate, a product); we follow the release. Norms
are instance norms without affine parameters, as released, so the state-dict keys are the convs'.
"""

from __future__ import annotations

import torch
from monai.networks.layers.factories import Norm
from torch import nn

from mambaseg.nn.factories import conv_type


class GatedSpatialConv(nn.Module):
    """SegMamba's GSC: (b, c, *spatial) -> (b, c, *spatial).

    Args:
        spatial_dims: 1, 2 or 3.
        channels: input and output channels.
    """

    def __init__(self, spatial_dims: int, channels: int) -> None:
        super().__init__()
        conv = conv_type(spatial_dims)
        norm = Norm[Norm.INSTANCE, spatial_dims]
        self.proj = conv(channels, channels, 3, 1, 1)
        self.norm = norm(channels)
        self.act = nn.ReLU()
        self.proj2 = conv(channels, channels, 3, 1, 1)
        self.norm2 = norm(channels)
        self.act2 = nn.ReLU()
        self.proj3 = conv(channels, channels, 1, 1, 0)
        self.norm3 = norm(channels)
        self.act3 = nn.ReLU()
        self.proj4 = conv(channels, channels, 1, 1, 0)
        self.norm4 = norm(channels)
        self.act4 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.act(self.norm(self.proj(x)))
        x1 = self.act2(self.norm2(self.proj2(x1)))
        x2 = self.act3(self.norm3(self.proj3(x)))
        return self.act4(self.norm4(self.proj4(x1 + x2))) + x
