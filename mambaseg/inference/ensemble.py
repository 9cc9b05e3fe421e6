"""Saved probabilities, and averaging those of several predictions of a case into one (``mambaseg ensemble``).

Dimension letters: k classes (or regions), *input the input image's array axes.

Saved probabilities (``predict --save-probabilities``, a fold's validation) are one ``.npz`` per case: key
``probabilities``, float16, (k, *input); for a region-based model also ``regions_class_order``, the label each
region's voxels get, so that the file says how it becomes a mask. ``average_probability_files`` averages those
of several predictions of one case, checked to agree in classes, regions and geometry. (Ensembles of models at
prediction time average in memory: ``pipeline.Ensemble``.)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mambaseg.io import Image, geometry_differences, read_image
from mambaseg.io.atomic import write_atomically

PROBABILITIES_KEY = "probabilities"
REGIONS_KEY = "regions_class_order"


class EnsembleError(ValueError):
    """Probability files that cannot be averaged; the message names them."""


def write_probabilities(
    path: Path, probabilities: np.ndarray, regions_class_order: Sequence[int] | None = None, compress: bool = True
) -> None:
    """``path`` (``.npz``) holding ``probabilities`` (k, *input) as float16, with the regions' labels if any."""
    arrays = {PROBABILITIES_KEY: probabilities.astype(np.float16)}
    if regions_class_order is not None:
        arrays[REGIONS_KEY] = np.asarray(regions_class_order, dtype=np.int64)
    save = np.savez_compressed if compress else np.savez
    write_atomically(Path(path), lambda handle: save(handle, **arrays))


def read_probabilities(path: Path) -> tuple[np.ndarray, list[int] | None]:
    """The (k, *input) float32 probabilities of an ``.npz`` and its regions' labels (None: softmax classes).

    Raises:
        EnsembleError: naming the file, when it cannot be read.
    """
    try:
        with np.load(path) as content:
            regions = [int(label) for label in content[REGIONS_KEY]] if REGIONS_KEY in content else None
            return content[PROBABILITIES_KEY].astype(np.float32), regions
    except (OSError, ValueError, KeyError, EOFError) as error:
        raise EnsembleError(f"{path}: cannot read the {PROBABILITIES_KEY!r} array: {error}") from error


@dataclass(frozen=True)
class ProbabilityFile:
    """One saved prediction of a case: its probabilities, and what gives its geometry (a JSON sidecar or a mask)."""

    probabilities: Path
    geometry: Path


def read_geometry(path: Path) -> Image:
    """The grid of a prediction: from a ``.json`` sidecar (``shape``, ``spacing``, ``origin``, ``direction``, as
    ``predict --save-probabilities`` writes it) or from an image file (a mask); the Image's voxels are zeros."""
    if path.suffix != ".json":
        image = read_image(path)
        return image.with_array(np.broadcast_to(np.uint8(0), image.array.shape))
    try:
        content = json.loads(path.read_text())
        shape = tuple(int(n) for n in content["shape"])
        return Image(
            np.broadcast_to(np.uint8(0), shape),
            tuple(float(v) for v in content["spacing"]),
            tuple(float(v) for v in content["origin"]),
            tuple(float(v) for v in content["direction"]),
            str(path),
        )
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise EnsembleError(
            f"{path}: not a probabilities sidecar with shape, spacing, origin and direction: {error}"
        ) from error


@dataclass
class EnsembleSummary:
    """What ``ensemble`` did: cases written, cases whose mask existed (skipped), cases not in every folder."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)


@dataclass
class AveragedProbabilities:
    """One case's probabilities averaged over several predictions, its grid, and how they become labels."""

    probabilities: np.ndarray  # (k, *input)
    grid: Image  # the case's geometry (voxels: zeros)
    regions_class_order: list[int] | None  # None: softmax classes


def average_probability_files(files: Sequence[ProbabilityFile]) -> AveragedProbabilities:
    """The mean of one case's saved probabilities, with the case's grid and the files' regions.

    Raises:
        EnsembleError: naming the files, when the class counts, the regions or the geometries differ, or the
            probabilities do not have the shape of their geometry.
    """
    if not files:
        raise EnsembleError("average_probability_files needs at least one probability file")
    total, reference, first, first_regions = None, None, files[0], None
    for file in files:
        geometry = read_geometry(file.geometry)
        probabilities, regions = read_probabilities(file.probabilities)
        if probabilities.shape[1:] != geometry.array.shape:
            raise EnsembleError(
                f"{file.probabilities}: probabilities of shape {probabilities.shape} do not fit the shape "
                f"{geometry.array.shape} of {file.geometry}"
            )
        if reference is None:
            total, reference, first_regions = probabilities, geometry, regions
            continue
        if probabilities.shape[0] != total.shape[0]:
            raise EnsembleError(
                f"{file.probabilities} has {probabilities.shape[0]} classes and {first.probabilities} "
                f"{total.shape[0]}: only predictions of the same classes can be averaged"
            )
        if regions != first_regions:
            raise EnsembleError(
                f"{file.probabilities} holds {_kind(regions)} and {first.probabilities} {_kind(first_regions)}: "
                "only predictions that become labels the same way can be averaged"
            )
        differences = geometry_differences(geometry, reference)
        if differences:
            raise EnsembleError(
                f"{file.geometry}: {differences[0].describe()} of {first.geometry}: "
                "only predictions of the same image can be averaged"
            )
        np.add(total, probabilities, out=total)
        del probabilities
    total /= len(files)
    return AveragedProbabilities(total, reference, first_regions)


def _kind(regions: list[int] | None) -> str:
    return "softmax classes" if regions is None else f"regions painted as labels {regions}"
