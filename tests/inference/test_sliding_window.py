import pytest
import torch
from torch import nn

from mambaseg.inference.sliding_window import (
    gaussian_importance_map,
    mirror_combinations,
    sliding_window_predict,
    window_slices,
    window_starts,
)


def test_window_starts_follow_nnunet_step_rule():
    # 100 voxels, patch 40, step 0.5: ceil((100 - 40) / 20) + 1 = 4 windows, 20 apart
    assert window_starts(100, 40, 0.5) == [0, 20, 40, 60]
    # 50 voxels, patch 40: ceil(10 / 20) + 1 = 2 windows, the second flush with the end
    assert window_starts(50, 40, 0.5) == [0, 10]
    assert window_starts(40, 40, 0.5) == [0]
    assert window_starts(30, 40, 0.5) == [0]


def test_windows_cover_every_voxel():
    covered = torch.zeros(37, 23)
    for w in window_slices((37, 23), (16, 16), 0.5):
        covered[w] += 1
    assert covered.min() >= 1


def test_gaussian_map_peaks_at_centre_and_has_no_zeros():
    g = gaussian_importance_map((9, 11))
    assert g.shape == (9, 11)
    assert g[4, 5] == g.max() == 1
    assert g.min() > 0
    torch.testing.assert_close(g, g.flip(0).flip(1))


def test_mirror_combinations_are_every_subset():
    assert mirror_combinations((0, 2)) == [(), (0,), (2,), (0, 2)]


class PointwiseNet(nn.Module):
    """A 1x1 convolution: its sliding-window prediction must equal one full-image pass."""

    def __init__(self, spatial_dims: int) -> None:
        super().__init__()
        self.conv = (nn.Conv2d if spatial_dims == 2 else nn.Conv3d)(2, 3, 1)

    def forward(self, x):
        return self.conv(x)


@pytest.mark.parametrize("shape", [(2, 37, 29), (2, 20, 17, 26), (2, 9, 30)])
def test_pointwise_model_gives_the_full_image_result(shape):
    spatial_dims = len(shape) - 1
    model = PointwiseNet(spatial_dims).eval()
    image = torch.randn(shape)
    patch = (16,) * spatial_dims  # the (2, 9, 30) case is smaller than the patch along one axis: padding
    logits = sliding_window_predict(model, image, patch, num_classes=3, step=0.5, batch_size=3)
    assert logits.shape == (3, *shape[1:])
    torch.testing.assert_close(logits, model(image[None])[0], rtol=1e-5, atol=1e-5)


class ShiftNet(nn.Module):
    """Not flip-equivariant: output = input shifted by one voxel along the last axis."""

    def forward(self, x):
        return torch.roll(x, 1, dims=-1)


def test_mirroring_averages_the_flipped_predictions():
    image = torch.randn(1, 8, 8)
    model = ShiftNet()
    mirrored = sliding_window_predict(model, image, (8, 8), 1, mirror_axes=(1,), device="cpu")
    expected = (torch.roll(image, 1, -1) + torch.roll(image.flip(-1), 1, -1).flip(-1)) / 2
    torch.testing.assert_close(mirrored, expected)


def test_deep_supervision_outputs_use_full_resolution():
    class DeepSupervised(nn.Module):
        def forward(self, x):
            return [x * 2, x[..., ::2, ::2]]

    image = torch.randn(1, 12, 12)
    out = sliding_window_predict(DeepSupervised(), image, (8, 8), 1, device="cpu")
    torch.testing.assert_close(out, image * 2)


def test_wrong_channel_count_and_step_are_rejected():
    with pytest.raises(ValueError, match="expected 5"):
        sliding_window_predict(PointwiseNet(2).eval(), torch.randn(2, 8, 8), (8, 8), 5)
    with pytest.raises(ValueError, match="step must be"):
        window_slices((8, 8), (4, 4), 0)
