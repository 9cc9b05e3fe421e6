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
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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

    def same_geometry(self, other: Image, tol: float = 1e-4) -> bool:
        """Equal shape, and spacing, origin and direction within ``tol``."""
        return (
            self.array.shape == other.array.shape
            and np.allclose(self.spacing, other.spacing, atol=tol)
            and np.allclose(self.origin, other.origin, atol=tol)
            and np.allclose(self.direction, other.direction, atol=tol)
        )
