"""DICOM series: listing the series in a folder and reading one into an ``Image``.

GDCM (through SimpleITK) groups files by SeriesInstanceUID and decodes the pixels, JPEG and JPEG 2000 included.
The slice order and spacing are checked here from each file's ImagePositionPatient projected on the slice
normal, so that a misordered, duplicated or missing slice is an error instead of a silently wrong volume.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np
import SimpleITK as sitk

from mambaseg.io.errors import ImageReadError
from mambaseg.io.image import Image
from mambaseg.io.sitk_formats import from_sitk

logger = logging.getLogger(__name__)

_POSITION, _ORIENTATION, _DESCRIPTION = "0020|0032", "0020|0037", "0008|103e"
_KEPT_TAGS = {
    "0020|000e": "SeriesInstanceUID",
    "0020|000d": "StudyInstanceUID",
    "0020|0052": "FrameOfReferenceUID",
    "0008|0060": "Modality",
    _DESCRIPTION: "SeriesDescription",
}
_GAP_FACTOR = 1.5
_IRREGULAR_TOLERANCE = 0.01


class DicomSeries(NamedTuple):
    """One series found in a folder."""

    uid: str
    n_files: int
    description: str


@contextmanager
def _quiet_itk() -> Iterator[None]:
    """Silence ITK's stderr warnings (GDCM warns about every folder without series) for the block."""
    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


def _series_ids(folder: Path) -> tuple[str, ...]:
    with _quiet_itk():
        return tuple(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))


def _series_files(folder: Path, uid: str) -> list[str]:
    with _quiet_itk():
        return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))


def _header(file: str) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(file)
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise ImageReadError(f"{file}: cannot read DICOM header: {err}") from err
    return reader


def _tag(reader: sitk.ImageFileReader, key: str) -> str:
    return reader.GetMetaData(key).strip(" \x00") if reader.HasMetaDataKey(key) else ""


def _numbers(reader: sitk.ImageFileReader, key: str, count: int, file: str) -> np.ndarray:
    text = _tag(reader, key)
    try:
        values = np.array([float(v) for v in text.split("\\")])
    except ValueError:
        values = np.array([])
    if values.shape != (count,):
        raise ImageReadError(f"{file}: DICOM tag {key} should hold {count} numbers, got {text!r}")
    return values


def _check_folder(folder: Path) -> None:
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: a DICOM series is read from a folder, this is a file")


def list_dicom_series(folder: str | Path) -> list[DicomSeries]:
    """The DICOM series directly inside ``folder`` (not its subfolders), as (uid, n_files, description)."""
    folder = Path(folder)
    _check_folder(folder)
    series = []
    for uid in _series_ids(folder):
        files = _series_files(folder, uid)
        series.append(DicomSeries(uid, len(files), _tag(_header(files[0]), _DESCRIPTION)))
    return series


def _choose_series(folder: Path, series_uid: str | None) -> str:
    uids = _series_ids(folder)
    if not uids:
        holders = sorted(p.name for p in folder.iterdir() if p.is_dir() and _series_ids(p))
        hint = f"; its subfolders {holders} hold series" if holders else ""
        raise ImageReadError(f"{folder}: no DICOM files found in this folder{hint}")
    if series_uid is not None:
        if series_uid not in uids:
            raise ValueError(f"{folder}: no series with SeriesInstanceUID {series_uid!r}; found {list(uids)}")
        return series_uid
    if len(uids) > 1:
        raise ValueError(f"{folder}: holds {len(uids)} DICOM series {list(uids)}; pass series_uid to choose one")
    return uids[0]


def _sorted_slices(folder: Path, files: list[str]) -> list[str]:
    """Files ordered along the slice normal, after checking for mixed orientations, duplicates and gaps."""
    headers = [_header(f) for f in files]
    orientations = np.stack([_numbers(h, _ORIENTATION, 6, f) for h, f in zip(headers, files, strict=True)])
    if np.abs(orientations - orientations[0]).max() > 1e-4:
        raise ImageReadError(f"{folder}: the series mixes slice orientations {np.unique(orientations, axis=0)}")
    normal = np.cross(orientations[0, :3], orientations[0, 3:])
    positions = np.stack([_numbers(h, _POSITION, 3, f) for h, f in zip(headers, files, strict=True)])
    heights = positions @ normal
    order = np.argsort(heights, kind="stable")
    heights, ordered = heights[order], [files[i] for i in order]
    steps = np.diff(heights)
    duplicate = np.flatnonzero(steps < 1e-3)
    if duplicate.size:
        i = duplicate[0]
        raise ImageReadError(
            f"{folder}: {ordered[i]} and {ordered[i + 1]} share the slice position {heights[i]:.3f} mm; "
            "the series holds several volumes (echoes, phases or time points)"
        )
    median = float(np.median(steps))
    gaps = np.flatnonzero(steps > _GAP_FACTOR * median)
    if gaps.size:
        i = gaps[0]
        raise ImageReadError(
            f"{folder}: slice missing: a gap of {steps[i]:.3f} mm between positions {heights[i]:.3f} and "
            f"{heights[i + 1]:.3f} mm along the slice normal (median spacing {median:.3f} mm), "
            f"after {Path(ordered[i]).name}"
        )
    if np.abs(steps - median).max() > _IRREGULAR_TOLERANCE * median:
        logger.warning(
            "%s: slice spacing varies from %.4f to %.4f mm; the volume assumes a uniform %.4f mm",
            folder,
            steps.min(),
            steps.max(),
            (heights[-1] - heights[0]) / len(steps),
        )
    return ordered


def read_dicom_series(folder: str | Path, series_uid: str | None = None) -> Image:
    """Read one DICOM series from a folder into a 3-D image (rescale slope and intercept applied).

    Args:
        folder: the folder holding the series' files (subfolders are not searched).
        series_uid: the SeriesInstanceUID to read; required when the folder holds several series.
    """
    folder = Path(folder)
    _check_folder(folder)
    uid = _choose_series(folder, series_uid)
    files = _series_files(folder, uid)
    if len(files) > 1:
        files = _sorted_slices(folder, files)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        with _quiet_itk():
            itk_image = reader.Execute()
    except RuntimeError as err:
        raise ImageReadError(f"{folder}: cannot read DICOM series {uid!r}: {err}") from err
    first = _header(files[0])
    metadata = {name: _tag(first, key) for key, name in _KEPT_TAGS.items()}
    metadata["SeriesInstanceUID"] = metadata["SeriesInstanceUID"] or uid
    images = from_sitk(itk_image, source=str(folder), metadata=metadata)
    if len(images) != 1:
        raise ImageReadError(f"{folder}: series {uid!r} has {len(images)} components per pixel (colour); not supported")
    return images[0]
