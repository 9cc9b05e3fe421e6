"""Small preprocessed cases written in the storage format, for tests of sampling and training."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mambaseg.preprocessing.case import CaseProperties
from mambaseg.preprocessing.storage import save_case


def write_case(folder: Path, name: str, shape: tuple[int, ...], blob: tuple[slice, ...], seed: int = 0) -> None:
    """A case of ``shape`` whose label is 1 inside ``blob`` (and bright there in the image), 0 elsewhere."""
    rng = np.random.default_rng(seed)
    seg = np.zeros((1, *shape), dtype=np.int8)
    seg[(0, *blob)] = 1
    data = (rng.normal(size=(1, *shape)) + 2.0 * seg).astype(np.float32)
    coords = np.argwhere(seg[0] == 1).astype(np.int32)
    ndim = len(shape)
    properties = CaseProperties(
        spacing=(1.0,) * ndim,
        origin=(0.0,) * ndim,
        direction=tuple(np.eye(ndim).ravel().tolist()),
        transpose_forward=tuple(range(ndim)),
        shape_before_crop=shape,
        bbox=[[0, s] for s in shape],
        shape_after_crop=shape,
        target_spacing=(1.0,) * ndim,
        shape_after_resampling=shape,
        class_locations={1: len(coords)},
    )
    save_case(folder, name, data, seg, properties, {1: coords})
