import numpy as np
import pytest
from scipy import ndimage

from mambaseg.preprocessing.resampling import (
    axis_orders,
    compute_new_shape,
    low_resolution_axis,
    resample_image,
    resample_labels,
    resize,
)


def test_new_shape_keeps_the_extent():
    assert compute_new_shape((10, 20, 30), (3.0, 1.0, 0.5), (1.5, 1.0, 1.0)) == (20, 20, 15)


@pytest.mark.parametrize("order", [0, 1, 3])
def test_matches_scipy_zoom_with_pixel_area_alignment(order):
    rng = np.random.default_rng(0)
    image = rng.random((9, 14, 11)).astype(np.float32)
    shape = (13, 7, 11)
    expected = ndimage.zoom(image, np.divide(shape, image.shape), order=order, mode="nearest", grid_mode=True)
    out = resize(image, shape, [order] * 3)
    assert out.shape == shape and out.dtype == np.float32
    assert np.allclose(out, expected, atol=1e-5)


def test_a_linear_ramp_stays_linear():
    ramp = np.broadcast_to(np.arange(40, dtype=np.float32) * 2.0, (1, 6, 8, 40))
    out = resample_image(ramp, (1.0, 1.0, 1.0), (1.0, 1.0, 0.5))
    assert out.shape == (1, 6, 8, 80)
    expected = 2.0 * ((np.arange(80) + 0.5) * 0.5 - 0.5)
    inner = slice(20, -20)  # edge values repeat past the border, which bends the spline near it
    assert np.allclose(out[0, 3, 4, inner], expected[inner], atol=1e-3)
    assert np.allclose(out[0, 0, 0], out[0, 5, 7])


def test_label_resampling_keeps_label_values():
    seg = np.zeros((1, 12, 12, 12), dtype=np.int16)
    seg[0, 2:6, 2:6, 2:6] = 1
    seg[0, 6:10, 6:10, 6:10] = 3
    seg[0, 0] = -1
    out = resample_labels(seg, (1.0, 1.0, 1.0), (0.7, 1.3, 1.9))
    assert out.shape == (1, *compute_new_shape((12, 12, 12), (1.0, 1.0, 1.0), (0.7, 1.3, 1.9)))
    assert out.dtype == seg.dtype
    assert set(np.unique(out)) == {-1, 0, 1, 3}


def test_anisotropic_spacing_resamples_the_thick_axis_with_nearest_neighbours():
    assert low_resolution_axis((5.0, 0.8, 0.8), (1.0, 1.0, 1.0)) == 0
    assert low_resolution_axis((1.0, 1.0, 1.0), (1.0, 1.0, 4.0)) == 2
    assert low_resolution_axis((1.0, 1.0, 2.9), (1.0, 1.0, 1.0)) is None
    assert low_resolution_axis((0.25, 1.0, 1.0), (1.0, 1.0, 1.0)) is None
    assert axis_orders(3, 3, (5.0, 0.8, 0.8), (2.5, 0.8, 0.8)) == [0, 3, 3]
    slices = np.stack([np.full((4, 4), 10.0), np.full((4, 4), 20.0)])[None]
    out = resample_image(slices, (5.0, 0.8, 0.8), (2.5, 0.8, 0.8))
    assert np.array_equal(np.unique(out), [10.0, 20.0])  # no blending between slices


def test_unsupported_order_is_refused():
    with pytest.raises(ValueError, match="order 2"):
        resize(np.zeros((4, 4)), (8, 8), [2, 2])
