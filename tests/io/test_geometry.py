"""One geometry comparison: shape, then spacing, origin and direction within GEOMETRY_TOLERANCE."""

import numpy as np
import pytest

from mambaseg.io import GEOMETRY_TOLERANCE, GeometryDifference, Image, geometry_differences

EYE = tuple(np.eye(3).ravel())


def _image(shape=(4, 5, 6), spacing=(0.5, 0.5, 2.0), origin=(-120.0, 80.0, 300.0), direction=EYE) -> Image:
    return Image(np.zeros(shape, np.uint8), spacing, origin, direction)


def _shifted(values, index, by):
    values = list(values)
    values[index] += by
    return tuple(values)


@pytest.mark.parametrize("attribute", ["spacing", "origin", "direction"])
def test_a_difference_within_the_tolerance_is_equal_and_beyond_it_is_reported(attribute):
    reference = _image()
    base = getattr(reference, attribute)
    within = _image(**{attribute: _shifted(base, 2, 0.99 * GEOMETRY_TOLERANCE)})
    beyond = _image(**{attribute: _shifted(base, 2, 1.01 * GEOMETRY_TOLERANCE)})
    assert geometry_differences(within, reference) == [] and within.same_geometry(reference)
    assert geometry_differences(beyond, reference) == [GeometryDifference(attribute, getattr(beyond, attribute), base)]
    assert not beyond.same_geometry(reference)


def test_the_tolerance_is_absolute_not_relative_to_large_origins():
    reference = _image(origin=(0.0, 0.0, 5000.0))
    assert geometry_differences(_image(origin=(0.0, 0.0, 5000.0 + 2 * GEOMETRY_TOLERANCE)), reference)


def test_a_shape_difference_is_the_only_one_reported():
    differences = geometry_differences(_image(shape=(4, 5, 7), spacing=(1.0, 1.0, 1.0)), _image())
    assert differences == [GeometryDifference("shape", (4, 5, 7), (4, 5, 6))]
    assert differences[0].describe() == "shape (4, 5, 7) differs from (4, 5, 6)"


def test_several_differences_are_listed_in_order_and_described_rounded():
    image = _image(spacing=(0.5, 0.75, 2.0), origin=(-120.0, 80.123456789, 300.0))
    differences = geometry_differences(image, _image())
    assert [d.attribute for d in differences] == ["spacing", "origin"]
    assert differences[1].describe() == "origin (-120.0, 80.12346, 300.0) differs from (-120.0, 80.0, 300.0)"


def test_nan_geometry_is_never_equal():
    assert geometry_differences(_image(origin=(float("nan"), 0.0, 0.0)), _image(origin=(float("nan"), 0.0, 0.0)))


def test_a_tighter_tolerance_may_be_asked_for_round_trip_checks():
    image = _image(spacing=_shifted((0.5, 0.5, 2.0), 0, 1e-5))
    assert image.same_geometry(_image()) and not image.same_geometry(_image(), tol=1e-6)
