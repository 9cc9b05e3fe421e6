"""Reading and writing image files by their ending, and DICOM series by their folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mambaseg.io.atomic import atomic_path
from mambaseg.io.dicom import read_dicom_series
from mambaseg.io.errors import ChannelFilesError
from mambaseg.io.image import Image
from mambaseg.io.nifti import read_nifti, read_nifti_channels, write_nifti
from mambaseg.io.sitk_formats import read_sitk, read_sitk_channels, write_sitk

NIFTI_EXTENSIONS = (".nii.gz", ".nii")
SUPPORTED_EXTENSIONS = (*NIFTI_EXTENSIONS, ".nrrd", ".mha", ".mhd", ".png", ".tif", ".tiff")


def image_extension(path: str | Path) -> str:
    """The supported ending of ``path`` (lower case, ``.nii.gz`` as one ending); ValueError for any other."""
    name = Path(path).name.lower()
    for extension in SUPPORTED_EXTENSIONS:
        if name.endswith(extension):
            return extension
    raise ValueError(f"{path}: unknown image file ending; supported: {', '.join(SUPPORTED_EXTENSIONS)}")


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    return path


def read_image(path: str | Path) -> Image:
    """Read a single-channel image file, or the one DICOM series in a folder.

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: an unknown ending, several DICOM series, or several channels (an RGB PNG, a 4-D NIfTI:
            use ``read_image_channels``).
        ImageReadError: a truncated or corrupt file (a ``ValueError``).
    """
    path = _existing(path)
    if path.is_dir():
        return read_dicom_series(path)
    if image_extension(path) in NIFTI_EXTENSIONS:
        return read_nifti(path)
    return read_sitk(path)


def read_image_channels(path: str | Path) -> list[Image]:
    """Read every channel of a file: the volumes of a 4-D NIfTI (Decathlon), the components of an RGB PNG.

    Each channel is an ``Image`` with the spatial geometry; a single-channel file gives a list of one.
    """
    path = _existing(path)
    if path.is_dir():
        return [read_dicom_series(path)]
    if image_extension(path) in NIFTI_EXTENSIONS:
        return read_nifti_channels(path)
    return read_sitk_channels(path)


def read_case_channels(paths: Sequence[str | Path]) -> list[Image]:
    """The channels of one case, in order: every channel of its one file (an RGB PNG, a 4-D NIfTI), or one channel
    from each of its files (nnU-Net's ``CASE_0000``, ``CASE_0001``, ...).

    This is the rule for every reader of a case (check, fingerprint, preprocessing, validation, prediction).

    Raises:
        ChannelFilesError: a file among several that holds more than one channel, naming it and the case's files.
    """
    if len(paths) == 1:
        return read_image_channels(paths[0])
    images = []
    for path in paths:
        channels = read_image_channels(path)
        if len(channels) != 1:
            names = ", ".join(Path(p).name for p in paths)
            raise ChannelFilesError(
                path,
                f"holds {len(channels)} channels, but it is one of the case's {len(paths)} image files ({names}), "
                "which hold one channel each; a file holding every channel must be the case's only image file",
            )
        images += channels
    return images


def write_image(image: Image, path: str | Path, overwrite: bool = True) -> None:
    """Write ``image`` atomically: a reader never sees a half-written file, and a failed write leaves none.

    NIfTI gets the same transform in qform and sform (code 1, scanner); PNG and TIFF accept only the default
    origin and direction since they cannot store them.
    """
    path = Path(path)
    extension = image_extension(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path}: exists and overwrite is off")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path) as staged:
            if extension in NIFTI_EXTENSIONS:
                write_nifti(image, staged)
            else:
                write_sitk(image, staged, extension)
    except OSError as err:
        if err.filename or err.errno is None:  # already names the file
            raise
        raise OSError(err.errno, err.strerror or str(err), str(path)) from err  # a full disk names no file
