"""Finding the cases to predict in what the user passed: image files, folders of them, DICOM series.

An input is one of:

* an image file (NIfTI, NRRD, MHA, ...): one case named after the file;
* a folder of image files: when every name ends in a channel suffix ``_XXXX`` (nnU-Net's
  ``CASE_0000.nii.gz``) the files are grouped into cases by the part before it, else each file is a case;
  when every suffix is ``_0000`` each file is a case holding every channel (nnU-Net's RGB ``CASE_0000.png``);
* a folder holding DICOM series: one case per series, named after the folder (several series in one
  folder: after their SeriesInstanceUID). Files in it that are not DICOM images (a ``preview.png``, a
  DICOMDIR, a report) are ignored with a log line, and a localizer beside the main series is skipped with one,
  so that neither renames nor replaces the series (``--series UID`` still picks a localizer);
* a folder whose subfolders hold DICOM series: the same, per subfolder, named after the subfolder's
  path relative to the input.

Inputs are only read, never written.
"""

from __future__ import annotations

import logging
import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mambaseg.io import (
    SUPPORTED_EXTENSIONS,
    Image,
    image_extension,
    list_dicom_series,
    main_series,
    read_case_channels,
    read_dicom_series,
)

logger = logging.getLogger(__name__)

_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


class InputError(ValueError):
    """Input that cannot be predicted; the message names the file or folder and the offending value."""


@dataclass(frozen=True)
class InputCase:
    """One case to predict.

    Attributes:
        name: the output's name (``NAME.nii.gz``).
        sources: the channel files in channel order, or the one DICOM folder.
        kind: ``files`` or ``dicom``.
        series_uid: the series to read from a DICOM folder that holds several.
        grouped: the files are nnU-Net channel files (``_XXXX``), one channel each.
    """

    name: str
    sources: tuple[Path, ...]
    kind: Literal["files", "dicom"]
    series_uid: str | None = None
    grouped: bool = False


def _stem(path: Path) -> str:
    return path.name[: -len(image_extension(path))]


def _is_image_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(SUPPORTED_EXTENSIONS) and not path.name.startswith(".")


def _file_cases(folder: Path, files: list[Path], n_channels: int | None) -> list[InputCase]:
    """Cases of a folder of image files: grouped by nnU-Net's channel names ``CASE_XXXX`` when they are the
    model's channels ``_0000`` to ``_{n_channels - 1}``, or one file ``CASE_0000`` each when no case has another
    channel file (every channel in one file: an RGB PNG). For a single-channel model, names ending in four digits
    none of which is ``_0000`` (``patient_0001``, ``patient_0002``) are case names, one case per file."""
    matches = [_CHANNEL_SUFFIX.match(_stem(f)) for f in files]
    singles = [InputCase(_stem(f), (f,), "files") for f in files]
    if not all(matches):
        return singles
    groups: dict[str, dict[int, Path]] = defaultdict(dict)
    for file, match in zip(files, matches, strict=True):
        channel = int(match["channel"])
        if channel in groups[match["case"]]:
            other = groups[match["case"]][channel]
            raise InputError(f"{folder}: case {match['case']!r} has channel {channel} twice: {other.name}, {file.name}")
        groups[match["case"]][channel] = file
    if all(list(channels) == [0] for channels in groups.values()):
        return [InputCase(name, (channels[0],), "files") for name, channels in groups.items()]
    expected = None if n_channels is None else list(range(n_channels))
    odd = {name: sorted(ch) for name, ch in groups.items() if sorted(ch) != (expected or list(range(len(ch))))}
    if odd and n_channels == 1 and all(0 not in channels for channels in odd.values()):
        return singles  # patient_0001, patient_0002: case numbers (channel names always start at _0000)
    if odd:
        name, channels = next(iter(odd.items()))
        wanted = f"_0000 to _{(n_channels or len(channels)) - 1:04d}"
        raise InputError(
            f"{folder}: case {name!r} has channels {channels}; expected {wanted}"
            + (f" for a model of {n_channels} channels" if n_channels else "")
        )
    return [
        InputCase(name, tuple(channels[c] for c in sorted(channels)), "files", grouped=True)
        for name, channels in groups.items()
    ]


def _dicom_cases(folder: Path, name: str, series_uid: str | None) -> list[InputCase]:
    found = list_dicom_series(folder)
    if series_uid is not None:
        chosen = [s for s in found if s.uid == series_uid]
    else:
        chosen = main_series(found)
        for skipped in sorted(set(found) - set(chosen)):
            logger.warning("%s: localizer series %s (%d files) not predicted", folder, skipped.uid, skipped.n_files)
    if len(chosen) == 1:
        return [InputCase(name, (folder,), "dicom", chosen[0].uid)]
    return [InputCase(s.uid, (folder,), "dicom", s.uid) for s in chosen]


def discover_cases(path: str | Path, series_uid: str | None = None, n_channels: int | None = None) -> list[InputCase]:
    """The cases in ``path`` (a file or folder, see the module docstring), sorted by name.

    Args:
        path: what the user passed as input.
        series_uid: keep only the DICOM series with this SeriesInstanceUID.
        n_channels: the model's input channels, which tell channel names (``CASE_0001``) from case names ending
            in four digits (``patient_0001``); None: names ending in ``_XXXX`` are channels.

    Raises:
        InputError: nothing to predict, a file of unknown type, inconsistent channel files, a series UID not
            found, or two cases with one name.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_file():
        if series_uid is not None:
            raise InputError(f"{path}: an image file, not a DICOM series; series {series_uid!r} applies to DICOM input")
        try:
            return [InputCase(_stem(path), (path,), "files")]
        except ValueError as err:
            raise InputError(str(err)) from err
    files = sorted(p for p in path.iterdir() if _is_image_file(p))
    if files and not list_dicom_series(path):
        if series_uid is not None:
            raise InputError(f"{path}: holds image files, not DICOM series; series {series_uid!r} applies to DICOM")
        cases = _file_cases(path, files, n_channels)
    else:
        cases = []
        for folder, subfolders, _ in os.walk(path):
            subfolders.sort()
            relative = Path(folder).relative_to(path)
            name = path.name if relative == Path(".") else "_".join(relative.parts)
            cases.extend(_dicom_cases(Path(folder), name, series_uid))
    if not cases:
        what = f"no DICOM series {series_uid!r}" if series_uid else "no DICOM series"
        raise InputError(
            f"{path}: nothing to predict: no image files ({', '.join(SUPPORTED_EXTENSIONS)}) and {what} in it "
            "or its subfolders"
        )
    names = [case.name for case in cases]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"{path}: several inputs would be written as {duplicates}; predict them separately")
    return sorted(cases, key=lambda case: case.name)


def load_case(case: InputCase) -> list[Image]:
    """The channels of one case, in channel order."""
    if case.kind == "dicom":
        return [read_dicom_series(case.sources[0], case.series_uid)]
    return read_case_channels(case.sources)


def check_channels(case: InputCase, channel_names: dict[str, str], images: list[Image] | None = None) -> None:
    """Raise InputError unless the case has one image per channel the run was trained on.

    Without ``images`` only what is known before reading is checked: the number of channel files of a grouped
    case, and that a DICOM series is one channel.
    """
    if images is not None:
        count = len(images)
    elif case.grouped or case.kind == "dicom":
        count = len(case.sources)
    else:
        return
    if count != len(channel_names):
        expected = ", ".join(channel_names.values())
        sources = ", ".join(str(s) for s in case.sources)
        raise InputError(
            f"case {case.name!r} ({sources}): {count} channel(s), the run expects {len(channel_names)} ({expected})"
        )


def check_output_folder(input_path: str | Path, output_dir: str | Path) -> None:
    """Refuse an output folder that is the input folder or inside it (symlinks resolved), or the input file."""
    source, target = Path(input_path).resolve(), Path(output_dir).resolve()
    if target == source or source in target.parents:
        where = "the" if target == source else "inside the"
        raise InputError(f"output folder {output_dir} is {where} input {input_path}; choose another folder")
    if target.exists() and not target.is_dir():
        raise InputError(f"output folder {output_dir} exists and is not a folder")


def check_outputs_apart(cases: Sequence[InputCase], outputs_of: Callable[[InputCase], Iterable[Path]]) -> None:
    """Refuse any output path that is an input: the same path (links resolved), the same file under another name (a
    hard link), or a path inside a DICOM input folder; the message names both.

    Every case's outputs are checked against every case's inputs (also those of other parts under torchrun), so that
    no command can write a mask over, or skip a case because of, an input image.
    """
    files: dict[Path, Path] = {}  # resolved input file -> as given
    identities: dict[tuple[int, int], Path] = {}  # (device, inode) -> input file as given
    folders: list[tuple[Path, Path]] = []  # (resolved DICOM folder, as given)
    for case in cases:
        for source in case.sources:
            if case.kind == "dicom":
                folders.append((source.resolve(), source))
                continue
            files[source.resolve()] = source
            status = source.stat()
            identities[(status.st_dev, status.st_ino)] = source
    for case in cases:
        for output in outputs_of(case):
            resolved = output.resolve()
            clash = files.get(resolved)
            if clash is None and output.exists():
                status = output.stat()
                clash = identities.get((status.st_dev, status.st_ino))
            if clash is None:
                clash = next((given for folder, given in folders if folder in (resolved, *resolved.parents)), None)
            if clash is not None:
                raise InputError(
                    f"output {output} of case {case.name!r} would be the input {clash}; choose an output folder "
                    "apart from the inputs"
                )
