"""The image type shared by every reader and writer: voxels plus their physical geometry.

Axis conventions (those of SimpleITK, which nnU-Net follows too):
    ``array``      voxels with the spatial axes in numpy order, slowest first: (z, y, x) in 3D,
                   (y, x) in 2D; one channel (channels are separate images or files).
    ``spacing``    voxel size in mm per axis, in ITK order (x, y, z): ``spacing[0]`` belongs to the
                   last array axis.
    ``origin``     physical position (mm) of the first voxel, (x, y, z).
    ``direction``  the direction-cosine matrix, row-major, ITK order: column j is the physical
                   direction of ITK axis j.

``array_spacing`` gives the spacing in array order, which is what resampling and planning use.

Whether two images share a grid (a label and its image, a prediction and its reference) is decided in one
place, ``geometry_differences``, with one tolerance, ``GEOMETRY_TOLERANCE``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

GEOMETRY_TOLERANCE = 1e-3
"""Largest absolute difference at which spacings, origins (mm) and direction cosines still count as equal.

Files of the same grid written by different tools disagree slightly: NIfTI keeps the affine in float32 (about
3e-5 mm at 500 mm from the origin; the qform's quaternion loses up to about 1e-5 in the cosines), DICOM keeps
positions as decimal strings that converters round to 5 or 6 places, and a label drawn in another program and
saved through another library carries both roundings, up to about 1e-4. A different grid (another scan,
another crop, a resampled label) is off by a sizeable fraction of a voxel, 0.1 mm or more, or rotated by
degrees (cosines off by 1e-2 or more). 1e-3 sits ten times above the first and a hundred times below the
second: a rounding is never reported, a real mismatch always is. The same number serves mm and cosines
because both errors come from the same float and decimal roundings.
"""

_GEOMETRY_ATTRIBUTES = ("spacing", "origin", "direction")


class GeometryDifference(NamedTuple):
    """One attribute (``shape``, ``spacing``, ``origin`` or ``direction``) in which two images differ."""

    attribute: str
    value: tuple[float, ...]
    reference: tuple[float, ...]

    def describe(self, decimals: int = 5) -> str:
        """``"spacing (1.0, 1.5, 2.0) differs from (1.0, 1.0, 2.0)"``, values rounded to ``decimals``."""
        return f"{self.attribute} {_rounded(self.value, decimals)} differs from {_rounded(self.reference, decimals)}"


def geometry_differences(image: Image, reference: Image, tol: float = GEOMETRY_TOLERANCE) -> list[GeometryDifference]:
    """How ``image`` differs from ``reference`` in grid: empty when they share it.

    A different array shape is the only difference reported, since the other attributes then say little;
    otherwise each of spacing, origin and direction that differs by more than ``tol`` anywhere, in that order.

    Args:
        image: the image to compare.
        reference: the image it should match.
        tol: largest absolute difference taken as equal; keep the default except in tests of exact round trips.
    """
    if image.array.shape != reference.array.shape:
        return [GeometryDifference("shape", tuple(image.array.shape), tuple(reference.array.shape))]
    differences = []
    for name in _GEOMETRY_ATTRIBUTES:
        mine, theirs = getattr(image, name), getattr(reference, name)
        if len(mine) != len(theirs) or not np.allclose(mine, theirs, rtol=0.0, atol=tol):
            differences.append(GeometryDifference(name, tuple(mine), tuple(theirs)))
    return differences


def _rounded(values: tuple[float, ...], decimals: int) -> tuple[float, ...] | tuple[int, ...]:
    if all(isinstance(value, int | np.integer) for value in values):
        return tuple(int(value) for value in values)
    return tuple(round(float(value), decimals) for value in values)


@dataclass
class Image:
    array: np.ndarray
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    source: str = ""
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ndim = self.array.ndim
        if len(self.spacing) != ndim or len(self.origin) != ndim or len(self.direction) != ndim * ndim:
            raise ValueError(
                f"{self.source or 'image'}: geometry does not match a {ndim}-D array of shape {self.array.shape}: "
                f"spacing {self.spacing}, origin {self.origin}, direction of {len(self.direction)} values"
            )

    @property
    def ndim(self) -> int:
        return self.array.ndim

    @property
    def array_spacing(self) -> tuple[float, ...]:
        """Spacing in array-axis order: (z, y, x) in 3D."""
        return tuple(reversed(self.spacing))

    def physical_points(self, indices: np.ndarray) -> np.ndarray:
        """Physical positions (x, y, z) in mm of voxel indices given in array order (z, y, x).

        Args:
            indices: shape (n, ndim), or (ndim,) for one voxel; fractional indices are allowed.
        """
        itk_index = np.asarray(indices, dtype=float)[..., ::-1]  # (n, ndim) in (x, y, z)
        direction = np.asarray(self.direction, dtype=float).reshape(self.ndim, self.ndim)
        return np.asarray(self.origin) + (itk_index * np.asarray(self.spacing)) @ direction.T

    def with_array(self, array: np.ndarray) -> Image:
        """The same geometry around new voxels of the same shape (a mask predicted for this image)."""
        if array.shape != self.array.shape:
            raise ValueError(f"with_array: shape {array.shape} differs from the image's {self.array.shape}")
        return Image(array, self.spacing, self.origin, self.direction, self.source, dict(self.metadata))

    def same_geometry(self, other: Image, tol: float = GEOMETRY_TOLERANCE) -> bool:
        """Equal shape, and spacing, origin and direction within ``tol`` (see ``geometry_differences``)."""
        return not geometry_differences(self, other, tol)
