"""A synthetic dataset large enough, for a small memory budget, that the planner chooses the cascade.

Each case is a noisy isotropic volume (1 mm, ``shape`` voxels, 48^3 by default) holding one bright sphere
(``sphere``, label 1) of random centre and radius. With a budget as small as ``plan --gpu-memory 0.05`` the
``3d_fullres`` patch covers less than a quarter of the median image, so ``3d_lowres`` and ``3d_cascade_fullres``
are planned (``mambaseg.planning.planner``), while the cases stay small enough to train on a CPU in seconds.
Written from ``seed`` in the nnU-Net v2 layout: ``dataset.json``, ``imagesTr/``, ``labelsTr/``, and held-out cases
in ``imagesTs/`` with their labels in ``labelsTs/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mambaseg_datasets.writing import write_dataset

LABELS = {"background": 0, "sphere": 1}
DATASET_NAME = "Dataset901_LargeSynthetic"


def make_case(rng: np.random.Generator, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """One (image float32, label uint8) pair of ``shape`` (z, y, x): a bright sphere in noise."""
    shape = tuple(int(s) for s in shape)
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))  # (3, z, y, x)
    radius = rng.uniform(0.12, 0.2) * min(shape)
    centre = np.array([rng.uniform(radius + 1, s - radius - 1) for s in shape], dtype=np.float32)
    label = (((grid - centre[:, None, None, None]) ** 2).sum(0) <= radius**2).astype(np.uint8)
    image = rng.normal(100.0, 10.0, size=shape).astype(np.float32) + 80.0 * label
    return image, label


def write_large_synthetic_dataset(
    root: str | Path, n_train: int = 5, n_test: int = 1, shape: Sequence[int] = (48, 48, 48), seed: int = 0
) -> Path:
    """Write the dataset into ``root/Dataset901_LargeSynthetic`` (left as it is when already complete); returns it."""
    folder = Path(root) / DATASET_NAME
    if (folder / "dataset.json").is_file():
        return folder
    rng = np.random.default_rng(seed)
    description = {
        "name": "LargeSynthetic",
        "description": "Noisy volumes with one bright sphere, sized for the cascade (mambaseg's tests)",
        "channel_names": {"0": "MRI"},
        "labels": LABELS,
    }
    return write_dataset(folder, lambda: make_case(rng, shape), n_train, n_test, "large", (1.0, 1.0, 1.0), description)
