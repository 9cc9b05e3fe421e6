"""The dataset fingerprint: spacings, shapes and foreground intensities, what the planner decides from.

Per case, as nnU-Net's fingerprint extractor: the images are cropped to the bounding box of the
voxels that are nonzero in any channel; the spacing (array order), the shape before and after the
crop and their voxel ratio are recorded, and foreground intensities (voxels where the label is
above 0) are sampled per channel: all of them when there are at most ``samples_per_case``, else
that many drawn without replacement with a seed fixed per case. Over the dataset, the samples of
each channel give the mean, median, standard deviation, min, max and the 0.5 and 99.5 percentiles.
"""

from __future__ import annotations

import json
import logging
import math
import os
import zlib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mambaseg.io.atomic import write_text_atomically
from mambaseg.io.progress import Progress, as_progress

logger = logging.getLogger(__name__)

FINGERPRINT_VERSION = 1
SAMPLES_PER_CASE = 10_000


def json_text(data: Any, indent: int | None = None) -> str:
    """``data`` as strict JSON: NaN and infinite floats (numpy's too) become ``null`` instead of bare ``NaN``."""

    def strict(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: strict(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [strict(item) for item in value]
        if isinstance(value, (float, np.floating)):
            return float(value) if math.isfinite(value) else None
        return value

    return json.dumps(strict(data), indent=indent, allow_nan=False)


@dataclass
class CaseFingerprint:
    """What one training case contributes."""

    name: str
    spacing: list[float]
    shape_before_crop: list[int]
    shape_after_crop: list[int]

    @property
    def relative_size_after_crop(self) -> float:
        return float(np.prod(self.shape_after_crop) / np.prod(self.shape_before_crop))


@dataclass
class IntensityStats:
    """Foreground intensity statistics of one channel; NaN (``null`` in the file) when it has no foreground."""

    mean: float
    median: float
    std: float
    min: float
    max: float
    percentile_00_5: float
    percentile_99_5: float


@dataclass
class Fingerprint:
    """A dataset's fingerprint; ``save``/``load`` write and read ``fingerprint.json``."""

    dataset_name: str
    channel_names: dict[str, str]
    labels: dict[str, int | list[int]]  # a list: a region (the union of those labels), nnU-Net's region training
    cases: list[CaseFingerprint]
    intensities: dict[str, IntensityStats]
    version: int = FINGERPRINT_VERSION
    notes: dict[str, Any] = field(default_factory=dict)
    regions_class_order: list[int] | None = None  # of a region-based dataset's dataset.json

    @property
    def spacings(self) -> np.ndarray:
        """(n_cases, n_axes) spacings in array order."""
        return np.array([c.spacing for c in self.cases], dtype=np.float64)

    @property
    def shapes_after_crop(self) -> np.ndarray:
        return np.array([c.shape_after_crop for c in self.cases], dtype=np.float64)

    @property
    def median_relative_size_after_crop(self) -> float:
        return float(np.median([c.relative_size_after_crop for c in self.cases]))

    @property
    def num_classes(self) -> int:
        """Output channels of a network: the number of distinct label values, background included; for a
        region-based dataset the number of regions (one sigmoid channel each)."""
        if self.regions_class_order is not None:
            return len(self.regions_class_order)
        return len(set(self.labels.values()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "dataset_name": self.dataset_name,
            "channel_names": self.channel_names,
            "labels": self.labels,
            "num_cases": len(self.cases),
            "median_spacing": np.median(self.spacings, 0).tolist(),
            "median_shape_after_crop": np.median(self.shapes_after_crop, 0).tolist(),
            "median_relative_size_after_crop": self.median_relative_size_after_crop,
            "foreground_intensities": {c: asdict(s) for c, s in self.intensities.items()},
            "cases": [{**asdict(c), "relative_size_after_crop": c.relative_size_after_crop} for c in self.cases],
            "notes": self.notes,
            **({"regions_class_order": self.regions_class_order} if self.regions_class_order is not None else {}),
        }

    def save(self, path: Path) -> None:
        """Write as readable JSON, atomically (``mambaseg.io.atomic``), creating the folder."""
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(path, json_text(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Fingerprint:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: cannot read the fingerprint: {err}") from err
        if data.get("version") != FINGERPRINT_VERSION:
            raise ValueError(
                f"{path}: fingerprint version {data.get('version')!r} is not the supported {FINGERPRINT_VERSION}; "
                "run `mambaseg fingerprint` again"
            )
        cases = [
            CaseFingerprint(c["name"], c["spacing"], c["shape_before_crop"], c["shape_after_crop"])
            for c in data["cases"]
        ]
        intensities = {
            c: IntensityStats(**{k: float("nan") if v is None else v for k, v in s.items()})
            for c, s in data["foreground_intensities"].items()
        }
        return cls(
            data["dataset_name"],
            data["channel_names"],
            {k: [int(c) for c in v] if isinstance(v, list) else int(v) for k, v in data["labels"].items()},
            cases,
            intensities,
            notes=data.get("notes", {}),
            regions_class_order=data.get("regions_class_order"),
        )


def nonzero_bbox(channels: Sequence[np.ndarray]) -> tuple[slice, ...]:
    """Bounding box of the voxels nonzero in any channel (the whole array when all are zero)."""
    mask = np.zeros(channels[0].shape, dtype=bool)
    for channel in channels:
        mask |= channel != 0
    if not mask.any():
        return tuple(slice(0, s) for s in mask.shape)
    box = []
    for axis in range(mask.ndim):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    return tuple(box)


def analyze_case(
    name: str,
    channels: Sequence[np.ndarray],
    label: np.ndarray,
    spacing: Sequence[float],
    samples_per_case: int = SAMPLES_PER_CASE,
) -> tuple[CaseFingerprint, list[np.ndarray]]:
    """One case's fingerprint and its sampled foreground intensities per channel.

    Args:
        name: the case name (it seeds the sampling).
        channels: one array per channel, all of one shape.
        label: the label map, of the same shape.
        spacing: voxel spacing in array order.
        samples_per_case: the most foreground voxels sampled per channel.
    """
    box = nonzero_bbox(channels)
    foreground = label[box] > 0
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    n_fg = int(foreground.sum())
    pick = rng.choice(n_fg, samples_per_case, replace=False) if n_fg > samples_per_case else slice(None)
    samples = [np.asarray(channel[box][foreground], dtype=np.float64)[pick] for channel in channels]
    case = CaseFingerprint(
        name=name,
        spacing=[float(s) for s in spacing],
        shape_before_crop=[int(s) for s in channels[0].shape],
        shape_after_crop=[sl.stop - sl.start for sl in box],
    )
    return case, samples


def intensity_stats(samples: np.ndarray) -> IntensityStats:
    """Statistics of one channel's pooled foreground samples (NaN when there are none)."""
    if samples.size == 0:
        return IntensityStats(*([float("nan")] * 7))
    low, median, high = np.percentile(samples, [0.5, 50.0, 99.5])
    return IntensityStats(
        mean=float(samples.mean()),
        median=float(median),
        std=float(samples.std()),
        min=float(samples.min()),
        max=float(samples.max()),
        percentile_00_5=float(low),
        percentile_99_5=float(high),
    )


def aggregate(
    dataset_name: str,
    channel_names: dict[str, str],
    labels: dict[str, int],
    results: Sequence[tuple[CaseFingerprint, list[np.ndarray]]],
) -> Fingerprint:
    """The dataset fingerprint from every case's ``analyze_case`` result."""
    if not results:
        raise ValueError(f"dataset {dataset_name!r} has no training cases to fingerprint")
    intensities = {
        str(c): intensity_stats(np.concatenate([samples[c] for _, samples in results]))
        for c in range(len(channel_names))
    }
    return Fingerprint(dataset_name, dict(channel_names), dict(labels), [case for case, _ in results], intensities)


def _analyze_dataset_case(case: Any, samples_per_case: int) -> tuple[CaseFingerprint, list[np.ndarray]]:
    images = case.load_images()
    label = case.load_label()
    if label is None:
        raise ValueError(f"case {case.name!r} has no label; the fingerprint needs labelled training cases")
    return analyze_case(case.name, [i.array for i in images], label.array, images[0].array_spacing, samples_per_case)


def extract_fingerprint(
    dataset: Any,
    workers: int | None = None,
    samples_per_case: int = SAMPLES_PER_CASE,
    progress: Progress | None = None,
) -> Fingerprint:
    """Fingerprint a ``mambaseg.data`` dataset, reading cases in ``workers`` processes.

    Args:
        dataset: a loaded dataset (``mambaseg.data.load_dataset``).
        workers: processes (default: the CPU count, at most 8); 1 reads in this process.
        samples_per_case: the most foreground voxels sampled per case and channel.
        progress: Where to report the cases done (``mambaseg.io.progress.as_progress``); None for silence.
    """
    workers = workers or min(8, os.cpu_count() or 1)
    cases = list(dataset.cases)
    results: list[tuple[CaseFingerprint, list[np.ndarray]]] = []
    with as_progress(progress).task("fingerprint", len(cases)) as task:
        if workers == 1:
            for case in cases:
                results.append(_analyze_dataset_case(case, samples_per_case))
                task.advance()
        else:
            with ProcessPoolExecutor(workers) as pool:
                for result in pool.map(_analyze_dataset_case, cases, [samples_per_case] * len(cases)):
                    results.append(result)
                    task.advance()
    channel_names = {str(k): v for k, v in dataset.channel_names.items()}
    labels = {str(k): [int(c) for c in v] if isinstance(v, list | tuple) else int(v) for k, v in dataset.labels.items()}
    fingerprint = aggregate(dataset.name, channel_names, labels, results)
    if dataset.has_regions:
        fingerprint.regions_class_order = dataset.regions_class_order
    logger.info("fingerprinted %d cases of %s", len(results), dataset.name)
    return fingerprint
