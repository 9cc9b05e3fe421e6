"""The built-in demo dataset: small synthetic 3-D MR-like volumes with two structures, from a seed.

Each case is a noisy volume of varied size holding a bright ellipsoid (``blob``) and a darker
curved tube (``tube``) at random positions and orientations, under a smooth multiplicative bias
field, at 1 x 1 x 1.5 mm. Written in the nnU-Net v2 layout: ``dataset.json``, ``imagesTr/``,
``labelsTr/``, and held-out cases in ``imagesTs/`` with their labels in ``labelsTs/``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mambaseg_datasets.writing import write_dataset

LABELS = {"background": 0, "blob": 1, "tube": 2}
SPACING_ZYX = (1.5, 1.0, 1.0)
DATASET_NAME = "Dataset900_Demo"


def _grid(shape: tuple[int, ...]) -> np.ndarray:
    return np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))  # (3, z, y, x)


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


def _ellipsoid(grid: np.ndarray, centre: np.ndarray, radii: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    offsets = np.tensordot(rotation, grid - centre[:, None, None, None], axes=1)  # (3, z, y, x)
    return (((offsets / radii[:, None, None, None]) ** 2).sum(0)) <= 1.0


def _tube(grid: np.ndarray, centre: np.ndarray, radius: float, thickness: float, rotation: np.ndarray) -> np.ndarray:
    """Half a torus: points within ``thickness`` of a circle of ``radius`` around ``centre``, one side only."""
    p = np.tensordot(rotation, grid - centre[:, None, None, None], axes=1)  # (3, z, y, x)
    ring = np.sqrt(p[1] ** 2 + p[2] ** 2) - radius
    return (ring**2 + p[0] ** 2 <= thickness**2) & (p[2] > 0)


def _bias_field(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A smooth field around 1: a random low-order polynomial of the normalised coordinates."""
    coords = _grid(shape) / np.array(shape, dtype=np.float32)[:, None, None, None] - 0.5
    field = np.zeros(shape, dtype=np.float32)
    for axis in range(3):
        field += rng.uniform(-0.4, 0.4) * coords[axis] + rng.uniform(-0.4, 0.4) * coords[axis] ** 2
    return np.exp(field)


def make_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One (image, label) pair, float32 and uint8, shape (z, y, x) of varied size."""
    shape = (int(rng.integers(24, 33)), int(rng.integers(40, 57)), int(rng.integers(40, 57)))
    grid = _grid(shape)
    extent = np.array(shape, dtype=np.float32) * np.array([1.5, 1.0, 1.0])  # mm
    label = np.zeros(shape, dtype=np.uint8)
    blob_centre = np.array(shape) * rng.uniform(0.3, 0.45, size=3)
    radii = rng.uniform(4.0, 8.0, size=3) / np.array(SPACING_ZYX)
    label[_ellipsoid(grid, blob_centre, radii, _rotation(rng))] = 1
    tube_centre = np.array(shape) * rng.uniform(0.55, 0.7, size=3)
    radius = float(rng.uniform(0.15, 0.22) * extent[1:].min())
    tube = _tube(grid, tube_centre, radius, float(rng.uniform(1.5, 2.5)), _rotation(rng))
    label[tube & (label == 0)] = 2
    intensity = np.choose(label, [rng.uniform(90, 110), rng.uniform(180, 220), rng.uniform(130, 150)]).astype(
        np.float32
    )
    image = intensity * _bias_field(shape, rng) + rng.normal(0.0, 15.0, size=shape).astype(np.float32)
    return image.astype(np.float32), label


def write_demo_dataset(root: str | Path, n_train: int = 24, n_test: int = 4, seed: int = 0) -> Path:
    """Write the demo dataset into ``root/Dataset900_Demo`` (left as it is when already complete); returns it."""
    folder = Path(root) / DATASET_NAME
    if (folder / "dataset.json").is_file():
        return folder
    rng = np.random.default_rng(seed)
    description = {
        "name": "Demo",
        "description": "Synthetic MR-like volumes with a bright ellipsoid and a darker tube (mambaseg's demo)",
        "channel_names": {"0": "MRI"},
        "labels": LABELS,
    }
    return write_dataset(folder, lambda: make_case(rng), n_train, n_test, "demo", SPACING_ZYX, description)
