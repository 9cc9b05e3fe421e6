"""DICOM series: listing the series in a folder and reading one into an ``Image``.

What a series folder may hold: every file directly in it is classified first (pydicom, headers only):

* not DICOM (a ``preview.png``, a ``README``, a NIfTI file): ignored, with a log line naming it;
* DICOM but not an image (a DICOMDIR, a structured report, a presentation state, a DICOM-SEG, an RT
  structure set): ignored, with a log line naming it;
* DICOM that cannot be whole (the DICOM magic or a ``.dcm`` name, but a header that does not parse, no pixel
  data, or pixel data shorter than its size says): **corrupt**, an error naming the file when a series of
  the folder is read;
* an image: grouped by SeriesInstanceUID. A localizer (ImageType LOCALIZER, or a series of 1 to 3 slices
  beside a larger one) is flagged, so that it never stands in for the main series; LOCALIZER images inside a
  series of other images are set aside with a log line.

GDCM (through SimpleITK) decodes the pixels, JPEG and JPEG 2000 included; a file it cannot decode is named as
corrupt. The slice order and spacing are checked here from each file's ImagePositionPatient projected on the
slice normal, so that a misordered, duplicated or missing slice, or slices stacked off their normal (a gantry tilt), is
an error instead of a silently wrong volume.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pydicom
import SimpleITK as sitk

from mambaseg.io.errors import ImageReadError
from mambaseg.io.image import GEOMETRY_TOLERANCE, Image
from mambaseg.io.limits import MAX_VOXELS
from mambaseg.io.sitk_formats import from_sitk

logger = logging.getLogger(__name__)

_POSITION, _ORIENTATION, _DESCRIPTION = "0020|0032", "0020|0037", "0008|103e"
_ROWS, _COLUMNS, _PIXEL_SPACING, _FRAMES = "0028|0010", "0028|0011", "0028|0030", "0028|0008"
_PIXEL_SPACING_TOLERANCE = 1e-3  # mm: GEOMETRY_TOLERANCE, the decimal rounding of two writers
_KEPT_TAGS = {
    "0020|000e": "SeriesInstanceUID",
    "0020|000d": "StudyInstanceUID",
    "0020|0052": "FrameOfReferenceUID",
    "0008|0060": "Modality",
    _DESCRIPTION: "SeriesDescription",
}
_GAP_FACTOR = 1.5
_IRREGULAR_TOLERANCE = 0.01  # of the median slice spacing
_IRREGULAR_FLOOR = 0.01  # mm: below this any spacing difference is rounding
_SCOUT_SLICES = 3
_MAGIC_OFFSET = 128
_DEFER_BYTES = 4096
_UNDEFINED_LENGTH = 0xFFFFFFFF
_PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_DICOM_ENDINGS = (".dcm", ".dicom", ".ima")
_IMAGE_ENDINGS = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd", ".raw", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_NON_IMAGE_CLASSES = {
    "1.2.840.10008.1.3.10": "a DICOMDIR (media directory)",
    "1.2.840.10008.5.1.4.1.1.11.": "a presentation state",
    "1.2.840.10008.5.1.4.1.1.88.": "a structured report",
    "1.2.840.10008.5.1.4.1.1.104.": "an encapsulated document",
    "1.2.840.10008.5.1.4.1.1.66.": "a segmentation or registration object",
    "1.2.840.10008.5.1.4.1.1.9.": "a waveform",
    "1.2.840.10008.5.1.4.1.1.481.2": "an RT dose",
    "1.2.840.10008.5.1.4.1.1.481.3": "an RT structure set",
    "1.2.840.10008.5.1.4.1.1.481.5": "an RT plan",
}
"""SOP classes (a trailing dot: the classes under it) of DICOM files that are not images to segment."""


class DicomSeries(NamedTuple):
    """One series found in a folder; ``localizer`` marks a scout (see ``list_dicom_series``)."""

    uid: str
    n_files: int
    description: str
    localizer: bool = False


@contextmanager
def _quiet_itk() -> Iterator[None]:
    """Silence ITK's stderr warnings for the block."""
    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


@dataclass
class _Series:
    files: list[str] = field(default_factory=list)
    description: str = ""
    localizer_files: list[str] = field(default_factory=list)


@dataclass
class _FolderScan:
    """What a folder holds: image series by SeriesInstanceUID, corrupt DICOM files, files set aside (with why)."""

    series: dict[str, _Series] = field(default_factory=dict)
    corrupt: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(default_factory=list)

    def localizers(self) -> set[str]:
        """Series that are scouts: ImageType LOCALIZER, or 1 to 3 slices beside a series of more."""
        largest = max((len(s.files) for s in self.series.values()), default=0)
        return {
            uid
            for uid, s in self.series.items()
            if (s.localizer_files and len(s.localizer_files) == len(s.files))
            or (len(s.files) <= _SCOUT_SLICES < largest)
        }


def _non_image_kind(sop_class: str) -> str | None:
    for uid, kind in _NON_IMAGE_CLASSES.items():
        if sop_class == uid or (uid.endswith(".") and sop_class.startswith(uid)):
            return kind
    return None


def _has_magic(path: Path) -> bool:
    with open(path, "rb") as stream:
        stream.seek(_MAGIC_OFFSET)
        return stream.read(4) == b"DICM"


def _pixel_problem(dataset: pydicom.Dataset, path: Path) -> str | None:
    """Why the pixel data of an image file cannot be whole (missing, shorter than its size says), or None."""
    element = next((dataset.get_item(t) for t in _PIXEL_TAGS if t in dataset), None)
    if element is None:
        return f"no pixel data (the file ends at {path.stat().st_size} bytes)"
    for key in ("Rows", "Columns"):
        if not dataset.get(key):
            return f"no {key}"
    if isinstance(element, pydicom.DataElement):  # already read (small, or encapsulated)
        if element.is_undefined_length:  # encapsulated (compressed): decoding finds a broken stream
            return None
        length, offset = len(element.value or b""), None
    else:
        length, offset = element.length, element.value_tell
    if length == _UNDEFINED_LENGTH:
        return None
    size = path.stat().st_size
    if offset is not None and offset + length > size:
        return f"the pixel data is cut short: {size - offset} of {length} bytes"
    frames = int(dataset.get("NumberOfFrames") or 1)
    samples = int(dataset.get("SamplesPerPixel") or 1)
    bits = int(dataset.get("BitsAllocated") or 8)
    expected = int(dataset.Rows) * int(dataset.Columns) * frames * samples * bits // 8
    if length < expected:
        return f"the pixel data holds {length} bytes, {expected} expected for its size"
    return None


def _scan_file(path: Path, scan: _FolderScan) -> None:
    name = str(path)
    if path.name.lower().endswith(_IMAGE_ENDINGS):
        scan.ignored.append((name, "not DICOM"))
        return
    magic = _has_magic(path)
    looks_dicom = magic or path.name.lower().endswith(_DICOM_ENDINGS)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(path, defer_size=_DEFER_BYTES, force=not magic)
    except Exception as err:  # noqa: BLE001 - pydicom raises many types for broken files
        if looks_dicom:
            scan.corrupt.append((name, f"cannot be parsed: {err}"))
        else:
            scan.ignored.append((name, "not DICOM"))
        return
    meta = getattr(dataset, "file_meta", None)
    sop_class = str(dataset.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta else "") or "")
    if not sop_class:
        if looks_dicom:
            scan.corrupt.append((name, "no SOP class: the header is missing or cut short"))
        else:
            scan.ignored.append((name, "not DICOM"))
        return
    kind = _non_image_kind(sop_class)
    if kind is None and str(dataset.get("Modality", "")).upper() == "SEG":
        kind = "a segmentation object"
    if kind is not None:
        scan.ignored.append((name, f"DICOM but not an image: {kind}"))
        return
    problem = _pixel_problem(dataset, path)
    if problem is not None:
        scan.corrupt.append((name, problem))
        return
    uid = str(dataset.get("SeriesInstanceUID", "")).strip()  # anonymisers may empty it: one series ""
    series = scan.series.setdefault(uid, _Series(description=str(dataset.get("SeriesDescription", "")).strip()))
    series.files.append(name)
    image_type = [str(v).upper() for v in (dataset.get("ImageType") or [])]
    if "LOCALIZER" in image_type:
        series.localizer_files.append(name)


def _scan(folder: Path) -> _FolderScan:
    """Classify every file directly in ``folder``; in a folder with DICOM, log the files set aside, naming them."""
    scan = _FolderScan()
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            _scan_file(path, scan)
    for series in scan.series.values():
        if series.localizer_files and len(series.localizer_files) < len(series.files):
            for file in series.localizer_files:
                series.files.remove(file)
                scan.ignored.append((file, "a localizer (ImageType LOCALIZER) in a series of other images"))
    if scan.series or scan.corrupt:  # a folder of other files alone is no series folder: nothing to say
        for file, why in scan.ignored:
            logger.warning("%s: ignored: %s", file, why)
    return scan


def _corrupt_error(folder: Path, corrupt: list[tuple[str, str]]) -> ImageReadError:
    listed = "; ".join(f"{file}: {why}" for file, why in corrupt)
    return ImageReadError(f"{folder}: corrupt DICOM file(s): {listed}")


def _header(file: str) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(file)
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise ImageReadError(f"{file}: corrupt DICOM file: cannot read its header: {err}") from err
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
    """The DICOM image series directly inside ``folder`` (not its subfolders), as (uid, n_files, description,
    localizer); files that are not DICOM images are left out with a log line naming them."""
    folder = Path(folder)
    _check_folder(folder)
    scan = _scan(folder)
    localizers = scan.localizers()
    return [DicomSeries(uid, len(s.files), s.description, uid in localizers) for uid, s in sorted(scan.series.items())]


def main_series(series: list[DicomSeries]) -> list[DicomSeries]:
    """The series of a folder that are not localizers (all of them when every one is)."""
    return [s for s in series if not s.localizer] or list(series)


def _choose_series(folder: Path, scan: _FolderScan, series_uid: str | None) -> str:
    if scan.corrupt:
        raise _corrupt_error(folder, scan.corrupt)
    uids = sorted(scan.series)
    if not uids:
        holders = sorted(p.name for p in folder.iterdir() if p.is_dir() and _has_dicom_files(p))
        hint = f"; its subfolders {holders} hold series" if holders else ""
        raise ImageReadError(f"{folder}: no DICOM image files found in this folder{hint}")
    if series_uid is not None:
        if series_uid not in uids:
            raise ValueError(f"{folder}: no series with SeriesInstanceUID {series_uid!r}; found {uids}")
        return series_uid
    localizers = scan.localizers()
    main = [uid for uid in uids if uid not in localizers] or uids
    if len(main) > 1:
        raise ValueError(f"{folder}: holds {len(main)} DICOM series {main}; pass series_uid to choose one")
    for uid in sorted(set(uids) - set(main)):
        logger.warning("%s: localizer series %s (%d files) skipped", folder, uid, len(scan.series[uid].files))
    return main[0]


def _has_dicom_files(folder: Path) -> bool:
    return any(p.is_file() and _has_magic(p) for p in folder.iterdir())


def _frames(reader: sitk.ImageFileReader, file: str) -> int:
    text = _tag(reader, _FRAMES)
    try:
        return int(text) if text else 1
    except ValueError as err:
        raise ImageReadError(f"{file}: DICOM tag NumberOfFrames should be a number, got {text!r}") from err


def _check_slices_agree(folder: Path, files: list[str], headers: list[sitk.ImageFileReader]) -> None:
    """What the slices of one series must share to be one volume: one frame each (no enhanced multi-frame file),
    rows and columns, and the in-plane pixel spacing; and the volume's size stays under ``MAX_VOXELS``.

    Raises:
        ImageReadError: naming the first slice that disagrees with the first one, and both values.
    """
    first, first_file = headers[0], files[0]
    frames = _frames(first, first_file)
    if frames > 1:
        raise ImageReadError(
            f"{first_file}: an enhanced multi-frame DICOM file ({frames} frames in one file) is not supported; "
            "convert the series to NIfTI (e.g. with dcm2niix) or to one file per slice"
        )
    size = (_tag(first, _ROWS), _tag(first, _COLUMNS))
    spacing = _numbers(first, _PIXEL_SPACING, 2, first_file) if first.HasMetaDataKey(_PIXEL_SPACING) else None
    for reader, file in zip(headers[1:], files[1:], strict=True):
        if _frames(reader, file) > 1:
            raise ImageReadError(f"{file}: a multi-frame DICOM file inside a series of single slices ({folder})")
        other = (_tag(reader, _ROWS), _tag(reader, _COLUMNS))
        if other != size:
            raise ImageReadError(
                f"{file}: {other[0]} rows x {other[1]} columns, the series' slice {Path(first_file).name} has "
                f"{size[0]} x {size[1]}; every slice of a series must have the same size"
            )
        if spacing is not None:
            mine = _numbers(reader, _PIXEL_SPACING, 2, file)
            if np.abs(mine - spacing).max() > _PIXEL_SPACING_TOLERANCE:
                raise ImageReadError(
                    f"{file}: pixel spacing {tuple(mine)} mm, the series' slice {Path(first_file).name} has "
                    f"{tuple(spacing)} mm; every slice of a series must have the same in-plane spacing"
                )
    try:
        voxels = int(size[0]) * int(size[1]) * len(files)
    except ValueError as err:
        raise ImageReadError(f"{first_file}: DICOM tags Rows and Columns should be numbers, got {size}") from err
    if voxels > MAX_VOXELS:
        raise ImageReadError(
            f"{folder}: the series claims {size[0]} x {size[1]} x {len(files)} voxels, more than the limit of "
            f"{MAX_VOXELS} voxels"
        )


def _check_stacked_along_normal(folder: Path, files: list[str], positions: np.ndarray, normal: np.ndarray) -> None:
    """Refuse slices whose positions drift within the slice plane (a gantry tilt): ITK stacks the slices along their
    normal from the first one, which would misplace every later slice by its drift.

    A drift up to ``GEOMETRY_TOLERANCE`` per mm along the normal (0.06 degrees) is the rounding of the orientation's
    decimal strings, not a tilt.
    """
    offsets = positions - positions[0]
    heights = offsets @ normal
    drift = np.linalg.norm(offsets - np.outer(heights, normal), axis=1)
    excess = drift - (_IRREGULAR_FLOOR + GEOMETRY_TOLERANCE * np.abs(heights))
    if excess.max() > 0:
        i = int(np.argmax(excess))
        tilt = np.degrees(np.arctan2(drift[i], abs(heights[i])))
        raise ImageReadError(
            f"{files[i]}: its ImagePositionPatient lies {drift[i]:.3f} mm beside the normal through the first slice "
            f"{Path(files[0]).name}: the slices of {folder} are stacked {tilt:.1f} degrees off their normal (a gantry "
            "tilt?), which a volume's geometry cannot hold; resample the series first (dcm2niix corrects gantry tilt)"
        )


def _sorted_slices(folder: Path, files: list[str]) -> list[str]:
    """Files ordered along the slice normal, after checking that the slices agree (``_check_slices_agree``) and
    share one orientation, and that no position is doubled, missing or off the series' regular spacing."""
    headers = [_header(f) for f in files]
    _check_slices_agree(folder, files, headers)
    if len(files) == 1:
        return files
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
    _check_stacked_along_normal(folder, ordered, positions[order], normal)
    median = float(np.median(steps))
    gaps = np.flatnonzero(steps > _GAP_FACTOR * median)
    if gaps.size:
        i = gaps[0]
        raise ImageReadError(
            f"{folder}: slice missing: a gap of {steps[i]:.3f} mm between positions {heights[i]:.3f} and "
            f"{heights[i + 1]:.3f} mm along the slice normal (median spacing {median:.3f} mm), "
            f"after {Path(ordered[i]).name}"
        )
    irregular = np.flatnonzero(np.abs(steps - median) > max(_IRREGULAR_TOLERANCE * median, _IRREGULAR_FLOOR))
    if irregular.size:
        i = irregular[0]
        raise ImageReadError(
            f"{ordered[i + 1]}: {steps[i]:.4f} mm from the slice before it ({Path(ordered[i]).name}), the series' "
            f"spacing is {median:.4f} mm: slices must be evenly spaced (within 1 %) to form one volume; resample "
            "the series (e.g. convert it with dcm2niix) first"
        )
    return ordered


def read_dicom_series(folder: str | Path, series_uid: str | None = None) -> Image:
    """Read one DICOM series from a folder into a 3-D image (rescale slope and intercept applied).

    Files that are not DICOM images are ignored with a log line; a localizer beside the main series is skipped.

    Args:
        folder: the folder holding the series' files (subfolders are not searched).
        series_uid: the SeriesInstanceUID to read; required when the folder holds several main series.

    Raises:
        ImageReadError: a corrupt DICOM file in the folder (named), or a series that is not one regular volume.
    """
    folder = Path(folder)
    _check_folder(folder)
    scan = _scan(folder)
    uid = _choose_series(folder, scan, series_uid)
    files = _sorted_slices(folder, scan.series[uid].files)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        with _quiet_itk():
            itk_image = reader.Execute()
    except RuntimeError as err:
        _name_undecodable(files)
        raise ImageReadError(f"{folder}: cannot read DICOM series {uid!r}: {err}") from err
    first = _header(files[0])
    metadata = {name: _tag(first, key) for key, name in _KEPT_TAGS.items()}
    metadata["SeriesInstanceUID"] = metadata["SeriesInstanceUID"] or uid
    images = from_sitk(itk_image, source=str(folder), metadata=metadata)
    if len(images) != 1:
        raise ImageReadError(f"{folder}: series {uid!r} has {len(images)} components per pixel (colour); not supported")
    return images[0]


def _name_undecodable(files: list[str]) -> None:
    """Raise naming the first file whose pixels GDCM cannot decode (after the series as a whole failed)."""
    for file in files:
        try:
            with _quiet_itk():
                sitk.ReadImage(file)
        except RuntimeError as err:
            raise ImageReadError(f"{file}: corrupt DICOM file: its pixels cannot be decoded: {err}") from err
