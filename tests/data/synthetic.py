"""Tiny synthetic datasets on disk in the nnU-Net v2 and Decathlon layouts, for tests of any layer.

Conventions are those of ``mambaseg.io.Image``: ``shape`` is the numpy array shape, slowest axis first
((z, y, x) in 3-D); ``spacing`` is in ITK order (x, y, z); ``origin`` is the translation of the NIfTI
affine (RAS), which readers in ITK's LPS convention report with x and y negated. Files are written with nibabel
(PNG with SimpleITK) directly, so these helpers do not depend on the readers they help to test.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from mambaseg.workspace.layout import LOCK_FILE

DEFAULT_LABELS = {"background": 0, "foreground": 1}


def write_nifti(
    path: Path, array: np.ndarray, spacing: Sequence[float] | None = None, origin: Sequence[float] | None = None
) -> Path:
    """Writes ``array`` ((z, y, x), (y, x), or (c, z, y, x) for a 4-D multi-channel file) as NIfTI."""
    n_spatial = array.ndim - 1 if array.ndim == 4 else array.ndim
    spacing = tuple(spacing) if spacing is not None else (1.0,) * n_spatial
    origin = tuple(origin) if origin is not None else (0.0,) * n_spatial
    affine = np.eye(4)
    affine[:n_spatial, :n_spatial] = np.diag(spacing)
    affine[:n_spatial, 3] = origin
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(array.T), affine), str(path))  # (x, y, z[, c])
    return path


def case_arrays(
    index: int, shape: Sequence[int], n_channels: int, label_values: Sequence[int]
) -> tuple[list[np.ndarray], np.ndarray]:
    """Float32 channel images and a uint8 label map with one box per foreground value; the same for the same index."""
    rng = np.random.default_rng(index)
    images = [(rng.normal(size=shape) * 100 + 10 * channel).astype(np.float32) for channel in range(n_channels)]
    label = np.zeros(shape, dtype=np.uint8)
    foreground = [value for value in label_values if value != 0]
    bounds = np.linspace(0, shape[0], len(foreground) + 1).astype(int)
    inner = tuple(slice(size // 4, size - size // 4) for size in shape[1:])
    for k, value in enumerate(foreground):
        label[(slice(bounds[k], bounds[k + 1]), *inner)] = value
    return images, label


def write_nnunet_dataset(
    root: Path,
    n_cases: int = 4,
    shape: Sequence[int] = (8, 10, 12),
    spacing: Sequence[float] = (1.0, 1.0, 2.0),
    labels: Mapping[str, int] | None = None,
    channels: Mapping[int, str] | None = None,
    n_test: int = 0,
    name: str = "Synthetic",
    prefix: str = "case",
) -> Path:
    """An nnU-Net v2 dataset: ``imagesTr/CASE_XXXX.nii.gz``, ``labelsTr/CASE.nii.gz``, optional ``imagesTs``."""
    labels = dict(labels or DEFAULT_LABELS)
    channels = dict(channels or {0: "CT"})
    for index in range(n_cases + n_test):
        case = f"{prefix}_{index:03d}"
        images, label = case_arrays(index, shape, len(channels), sorted(labels.values()))
        folder = root / ("imagesTr" if index < n_cases else "imagesTs")
        for channel, image in enumerate(images):
            write_nifti(folder / f"{case}_{channel:04d}.nii.gz", image, spacing)
        if index < n_cases:
            write_nifti(root / "labelsTr" / f"{case}.nii.gz", label, spacing)
    description = {
        "name": name,
        "channel_names": {str(index): value for index, value in channels.items()},
        "labels": labels,
        "numTraining": n_cases,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(description, indent=2))
    return root


def write_decathlon_dataset(
    root: Path,
    n_cases: int = 4,
    shape: Sequence[int] = (8, 10, 12),
    spacing: Sequence[float] = (1.0, 1.0, 2.0),
    labels: Mapping[str, int] | None = None,
    channels: Mapping[int, str] | None = None,
    n_test: int = 0,
    name: str = "Synthetic",
    prefix: str = "case",
) -> Path:
    """A Decathlon dataset; with more than one channel each image is one 4-D file (channels on the last NIfTI axis)."""
    labels = dict(labels or DEFAULT_LABELS)
    channels = dict(channels or {0: "MRI"})
    training, test = [], []
    for index in range(n_cases + n_test):
        case = f"{prefix}_{index:03d}"
        images, label = case_arrays(index, shape, len(channels), sorted(labels.values()))
        array = np.stack(images) if len(images) > 1 else images[0]
        if index < n_cases:
            write_nifti(root / "imagesTr" / f"{case}.nii.gz", array, spacing)
            write_nifti(root / "labelsTr" / f"{case}.nii.gz", label, spacing)
            training.append({"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"})
        else:
            write_nifti(root / "imagesTs" / f"{case}.nii.gz", array, spacing)
            test.append(f"./imagesTs/{case}.nii.gz")
    description = {
        "name": name,
        "tensorImageSize": "4D" if len(channels) > 1 else "3D",
        "modality": {str(index): value for index, value in channels.items()},
        "labels": {str(value): label_name for label_name, value in labels.items()},
        "numTraining": n_cases,
        "numTest": n_test,
        "training": training,
        "test": test,
    }
    (root / "dataset.json").write_text(json.dumps(description, indent=2))
    return root


RGB = {0: "R", 1: "G", 2: "B"}


def rgb_case_arrays(
    index: int, shape: Sequence[int] = (32, 40), n_components: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """A uint8 ``(*shape, n_components)`` picture of noise with a bright coloured disc, and the disc as a uint8 label
    map of ``shape``; the same for the same index."""
    rng = np.random.default_rng(index)
    rows, columns = np.mgrid[: shape[0], : shape[1]]
    radius = int(rng.integers(5, 8))
    centre = rng.integers(radius + 1, np.array(shape) - radius - 1)
    disc = (rows - centre[0]) ** 2 + (columns - centre[1]) ** 2 <= radius**2
    picture = rng.integers(0, 60, (*shape, n_components)).astype(np.uint8)
    picture[disc] = np.resize([220, 60, 40, 255], n_components) - rng.integers(0, 30, n_components)
    return picture, disc.astype(np.uint8)


def write_png(path: Path, array: np.ndarray) -> Path:
    """Writes a uint8 ``(y, x)`` greyscale or ``(y, x, c)`` colour array as PNG (SimpleITK, not mambaseg's writer)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(array, isVector=array.ndim == 3), str(path))
    return path


def write_rgb_png_dataset(
    root: Path, n_cases: int = 6, shape: Sequence[int] = (32, 40), n_test: int = 0, name: str = "Natural"
) -> Path:
    """An nnU-Net v2 dataset of 2-D natural images in nnU-Net's convention: one RGB ``imagesTr/CASE_0000.png`` per
    case with ``channel_names`` R, G, B, a greyscale ``labelsTr/CASE.png`` (a disc), optional ``imagesTs``."""
    for index in range(n_cases + n_test):
        case = f"img_{index:03d}"
        picture, label = rgb_case_arrays(index, shape)
        write_png(root / ("imagesTr" if index < n_cases else "imagesTs") / f"{case}_0000.png", picture)
        if index < n_cases:
            write_png(root / "labelsTr" / f"{case}.png", label)
    description = {
        "name": name,
        "channel_names": {str(index): value for index, value in RGB.items()},
        "labels": {"background": 0, "lesion": 1},
        "numTraining": n_cases,
        "file_ending": ".png",
    }
    (root / "dataset.json").write_text(json.dumps(description, indent=2))
    return root


def read_nifti_array(path: Path) -> np.ndarray:
    """The voxels of a NIfTI file in numpy order ((z, y, x); 4-D files as (c, z, y, x))."""
    return np.asanyarray(nib.load(str(path)).dataobj).T


def file_states(root: Path) -> dict[str, tuple[str, int]]:
    """Content hash and modification time of every file under ``root``, to show that nothing was changed; the lock
    files of ``mambaseg.io.locks`` (``.mambaseg.lock``: whoever owns a folder while a command runs) are not data."""
    return {
        str(path.relative_to(root)): (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.name.endswith(LOCK_FILE)
    }
