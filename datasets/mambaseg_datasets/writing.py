"""Writing a generated dataset in the nnU-Net v2 layout: NIfTI cases, then ``dataset.json`` last."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np


def write_nifti(path: Path, array: np.ndarray, spacing_zyx: Sequence[float]) -> None:
    """NIfTI with nibabel's (x, y, z) axes: the (z, y, x) array transposed, the spacing on the diagonal."""
    affine = np.diag([spacing_zyx[2], spacing_zyx[1], spacing_zyx[0], 1.0])
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(array.transpose(2, 1, 0)), affine), str(path))


def write_dataset(
    folder: Path,
    make_case: Callable[[], tuple[np.ndarray, np.ndarray]],
    n_train: int,
    n_test: int,
    prefix: str,
    spacing_zyx: Sequence[float],
    description: Mapping[str, Any],
) -> Path:
    """Cases ``PREFIX_XXX`` from ``make_case()`` (image, label) into ``imagesTr/labelsTr`` then ``imagesTs/labelsTs``;
    ``dataset.json`` (``description`` with ``numTraining`` and ``file_ending``) written last marks it complete."""
    for index in range(n_train + n_test):
        image, label = make_case()
        name = f"{prefix}_{index:03d}"
        images, labels = ("imagesTr", "labelsTr") if index < n_train else ("imagesTs", "labelsTs")
        write_nifti(folder / images / f"{name}_0000.nii.gz", image, spacing_zyx)
        write_nifti(folder / labels / f"{name}.nii.gz", label, spacing_zyx)
    content = {**description, "numTraining": n_train, "file_ending": ".nii.gz"}
    (folder / "dataset.json").write_text(json.dumps(content, indent=2) + "\n")
    return folder
