"""Synthetic images with chosen geometry, and a writer of synthetic DICOM series, for the io tests."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from mambaseg.io import Image, to_sitk


def rotation(angles: tuple[float, float, float]) -> np.ndarray:
    """Rotation matrix about x, then y, then z by ``angles`` radians."""
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


DIRECTIONS_3D = {
    "identity": np.eye(3),
    "flipped": np.diag([-1.0, 1.0, 1.0]),
    "flipped_twice": np.diag([-1.0, 1.0, -1.0]),
    "permuted": np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
    "oblique": rotation((0.3, -0.2, 0.5)),
    "oblique_reflected": rotation((0.1, 0.4, -0.7)) @ np.diag([1.0, -1.0, 1.0]),
}

DIRECTIONS_2D = {
    "identity": np.eye(2),
    "flipped": np.diag([-1.0, 1.0]),
    "oblique": rotation((0.0, 0.0, 0.35))[:2, :2],
}


def make_image(direction: np.ndarray, dtype: type = np.int16, seed: int = 0) -> Image:
    """A random image of anisotropic spacing and fractional origin with the given direction (2-D or 3-D)."""
    rng = np.random.default_rng(seed)
    ndim = direction.shape[0]
    shape = (5, 7, 6)[-ndim:]
    spacing = (0.7, 0.9, 2.5)[:ndim]
    origin = (-12.25, 30.5, -7.125)[:ndim]
    array = rng.integers(0, 200, size=shape).astype(dtype)
    return Image(array, spacing, origin, tuple(direction.ravel()))


def _ds(values) -> str:
    """A DICOM decimal-string list (each value at most 16 characters)."""
    return "\\".join(f"{float(v):.10g}" for v in values)


def write_dicom_series(
    image: Image,
    folder: Path,
    series_uid: str,
    shuffle_seed: int | None = 0,
    prefix: str = "",
    extra_tags: dict[str, str] | None = None,
) -> list[Path]:
    """Write ``image`` as one DICOM file per slice, named in an order unrelated to the slice order.

    Args:
        extra_tags: more DICOM tags (``"gggg|eeee"``) for every file, e.g. ImageType ``0008|0008``.

    Returns the files in slice order.
    """
    volume = to_sitk(image)
    direction = np.asarray(image.direction).reshape(3, 3)
    orientation = _ds(np.concatenate([direction[:, 0], direction[:, 1]]))
    n = volume.GetSize()[2]
    names = list(range(n))
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(names)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for k in range(n):
        slice_k = volume[:, :, k]
        tags = {
            "0008|0060": "MR",
            "0008|103e": f"synthetic {series_uid[-4:]}",
            "0020|000d": "1.2.826.0.1.3680043.8.498.1",
            "0020|000e": series_uid,
            "0008|0018": f"{series_uid}.{k + 1}",
            "0020|0052": "1.2.826.0.1.3680043.8.498.2",
            "0020|0013": str(k + 1),
            "0020|0032": _ds(volume.TransformIndexToPhysicalPoint((0, 0, k))),
            "0020|0037": orientation,
            "0018|0050": _ds([image.spacing[2]]),
            **(extra_tags or {}),
        }
        for key, value in tags.items():
            slice_k.SetMetaData(key, value)
        path = folder / f"{prefix}{names[k]:03d}.dcm"
        writer.SetFileName(str(path))
        writer.Execute(slice_k)
        files.append(path)
    return files
