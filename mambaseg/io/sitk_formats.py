"""NRRD, MetaImage (.mha/.mhd), PNG and TIFF through SimpleITK, and conversion between ``Image`` and SimpleITK.

Before SimpleITK reads a file, its header's geometry fields are checked (``mambaseg.io.sitk_headers``) and its claimed
size compared with the file (``mambaseg.io.limits``); only 2-D and 3-D images are read (channels are pixel
components).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from mambaseg.io.errors import ImageReadError
from mambaseg.io.image import Image
from mambaseg.io.limits import check_claimed_size
from mambaseg.io.sitk_headers import check_geometry_fields

PLANAR_EXTENSIONS = (".png", ".tif", ".tiff")
_COMPRESSED = (".nrrd", ".mha", ".mhd")


def from_sitk(itk_image: sitk.Image, source: str = "", metadata: dict[str, str] | None = None) -> list[Image]:
    """One ``Image`` per pixel component (a single one for scalar images), all sharing the geometry."""
    array = sitk.GetArrayFromImage(itk_image)
    geometry = (itk_image.GetSpacing(), itk_image.GetOrigin(), itk_image.GetDirection())
    if itk_image.GetNumberOfComponentsPerPixel() == 1:
        return [Image(array, *geometry, source=source, metadata=dict(metadata or {}))]
    return [
        Image(np.ascontiguousarray(array[..., c]), *geometry, source=source, metadata=dict(metadata or {}))
        for c in range(array.shape[-1])
    ]


def to_sitk(image: Image) -> sitk.Image:
    """A scalar SimpleITK image with the voxels and geometry of ``image`` (booleans become uint8)."""
    array = image.array.astype(np.uint8) if image.array.dtype == np.bool_ else image.array
    itk_image = sitk.GetImageFromArray(array, isVector=False)
    itk_image.SetSpacing([float(s) for s in image.spacing])
    itk_image.SetOrigin([float(o) for o in image.origin])
    itk_image.SetDirection([float(d) for d in image.direction])
    return itk_image


def _stored_bytes(path: Path) -> int:
    """The file's size, plus its data files for a MetaImage header (``.mhd``: ``ElementDataFile = x.raw``)."""
    size = path.stat().st_size
    if path.suffix.lower() == ".mhd":
        for line in path.read_text(errors="replace").splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "ElementDataFile" and value.strip() not in ("", "LOCAL", "LIST"):
                data = path.parent / value.strip()
                size += data.stat().st_size if data.is_file() else 0
    return size


def _check_header(path: Path) -> float:
    """Check the header's geometry fields, dimension and claimed size before SimpleITK allocates the image.

    Whether the voxels are compressed is not known here, so the compression bound applies to every format.

    Returns:
        The millimetres in one unit of the file's coordinates (``check_geometry_fields``).
    """
    mm_per_unit = check_geometry_fields(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise ImageReadError(f"{path}: cannot read image: {_reason(err)}") from err
    components = reader.GetNumberOfComponents()
    itemsize = sitk.Image([1] * reader.GetDimension(), reader.GetPixelID()).GetSizeOfPixelComponent()
    shape = (*reversed(reader.GetSize()), *((components,) if components > 1 else ()))
    if reader.GetDimension() > 3:
        raise ImageReadError(
            f"{path}: cannot read image: a {reader.GetDimension()}-D image of size {reader.GetSize()}; only 2-D and "
            "3-D images are read, with channels as pixel components (MetaImage ElementNumberOfChannels, a NRRD "
            "'vector' or 'list' axis)"
        )
    check_claimed_size(path, shape, itemsize, _stored_bytes(path), compressed=True)
    return mm_per_unit


def read_sitk_channels(path: Path) -> list[Image]:
    """Read a file with SimpleITK; a multi-component file (RGB PNG, vector NRRD) gives one image per component.

    The header is read first: a geometry field SimpleITK would take wrongly, or a claimed size the file cannot hold, is
    refused before anything is allocated; NRRD coordinates in m, cm or µm are converted to mm.
    """
    mm_per_unit = _check_header(path)
    try:
        itk_image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise ImageReadError(f"{path}: cannot read image: {_reason(err)}") from err
    if mm_per_unit != 1.0:
        itk_image.SetSpacing([s * mm_per_unit for s in itk_image.GetSpacing()])
        itk_image.SetOrigin([o * mm_per_unit for o in itk_image.GetOrigin()])
    return from_sitk(itk_image, source=str(path))


def read_sitk(path: Path) -> Image:
    """Read a single-channel file with SimpleITK.

    Multi-component files (RGB or RGBA PNG/TIFF, vector NRRD) are refused rather than silently reduced to one
    channel: read them with ``read_image_channels``.
    """
    channels = read_sitk_channels(path)
    if len(channels) != 1:
        raise ImageReadError(
            f"{path}: cannot read image: it has {len(channels)} components per pixel (RGB?); "
            "read it with read_image_channels"
        )
    return channels[0]


def write_sitk(image: Image, path: Path, extension: str) -> None:
    """Write with SimpleITK; PNG and TIFF keep spacing only, so other geometry is refused rather than lost."""
    if extension in PLANAR_EXTENSIONS:
        _check_planar_geometry(image, path)
    try:
        sitk.WriteImage(to_sitk(image), str(path), useCompression=extension in _COMPRESSED)
    except RuntimeError as err:
        raise ValueError(f"{path}: cannot write a {image.ndim}-D {image.array.dtype} image: {_reason(err)}") from err


def _check_planar_geometry(image: Image, path: Path) -> None:
    if not np.allclose(image.origin, 0.0) or not np.allclose(image.direction, np.eye(image.ndim).ravel()):
        raise ValueError(
            f"{path}: PNG/TIFF cannot store origin {image.origin} or direction {image.direction}; "
            "write this image as NIfTI, NRRD or MHA"
        )


def _reason(err: RuntimeError) -> str:
    """SimpleITK errors carry the C++ source location first; keep the lines that say what went wrong."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return " ".join(line for line in lines if not line.startswith("Exception thrown in SimpleITK")) or str(err)
