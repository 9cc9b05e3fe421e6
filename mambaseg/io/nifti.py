"""NIfTI-1 reading and writing through nibabel, with the geometry SimpleITK would report for the same file.

nibabel maps voxel (i, j, k) to RAS millimetres with a 4x4 affine; ITK uses LPS, so the x and y rows of the
affine change sign. Which of the header's two transforms is used follows ITK's NIfTI reader: the sform when it is
a rotation times a scale and either is coded "scanner" (1), is the only one coded, or agrees with the qform; the
qform otherwise. As in ITK, spacing comes from ``pixdim`` and direction from the normalised affine columns.

Every geometry field is honoured or refused, naming the file:

* ``pixdim`` of a spatial axis that is zero, negative or not finite is an error (nibabel would turn 0 into 1 and
  -2 into 2, and only print so, naming no file);
* sform and qform both coded but disagreeing by more than ``GEOMETRY_TOLERANCE`` (in mm and cosines): a warning
  naming the file, both origins and the transform used (the ITK choice above);
* whatever else nibabel's header check would fix is logged as a warning naming the file; nibabel's own printing
  is silenced.

The header's claimed array size is checked against the file before any voxel is read (``mambaseg.io.limits``).
"""

from __future__ import annotations

import logging
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.openers import ImageOpener
from nibabel.spatialimages import HeaderDataError

from mambaseg.io.errors import ImageReadError
from mambaseg.io.image import GEOMETRY_TOLERANCE, Image
from mambaseg.io.limits import check_claimed_size

logger = logging.getLogger(__name__)

_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_SCANNER = 1
_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, ImageFileError, HeaderDataError)
_NIBABEL_LOGGER = logging.getLogger("nibabel.global")
_NIBABEL_LOCK = threading.Lock()


def _sform_is_rigid(sform: np.ndarray, pixdim: np.ndarray, path: Path) -> bool:
    """Whether the sform is a rotation (or reflection) times positive column scales."""
    if not np.allclose(sform[3], [0.0, 0.0, 0.0, 1.0]):
        return False
    norms = np.linalg.norm(sform[:3, :3], axis=0)
    if np.any(norms == 0):
        return False
    if np.any(np.abs(norms - pixdim) > 1e-3):
        logger.warning("%s: sform column scales %s differ from pixdim %s; spacing follows pixdim", path, norms, pixdim)
    rotation = sform[:3, :3] / norms
    return bool(np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-4))


def _forms_agree(sform: np.ndarray, qform: np.ndarray, tol: float = 1e-4) -> bool:
    s_norms, q_norms = np.linalg.norm(sform[:3, :3], axis=0), np.linalg.norm(qform[:3, :3], axis=0)
    return (
        np.allclose(s_norms, q_norms, atol=tol)
        and np.allclose(sform[:3, :3] / s_norms, qform[:3, :3] / q_norms, atol=tol)
        and np.allclose(sform[:3, 3], qform[:3, 3], atol=tol)
    )


def _warn_if_forms_disagree(sform: np.ndarray, qform: np.ndarray, used: str, path: Path) -> None:
    if _forms_agree(sform, qform, GEOMETRY_TOLERANCE):
        return
    origin_s = tuple(round(float(v), 3) for v in _LPS_FROM_RAS[:3, :3] @ sform[:3, 3])
    origin_q = tuple(round(float(v), 3) for v in _LPS_FROM_RAS[:3, :3] @ qform[:3, 3])
    logger.warning(
        "%s: the sform and the qform disagree (origin %s vs %s mm, or direction or scale); using the %s, as ITK does",
        path,
        origin_s,
        origin_q,
        used,
    )


def _chosen_affine(header: nib.Nifti1Header, path: Path) -> np.ndarray | None:
    """The RAS affine ITK would use, or None when neither transform is coded."""
    qform, q_code = header.get_qform(coded=True)
    sform, s_code = header.get_sform(coded=True)
    if not q_code and not s_code:
        return None
    if s_code and _sform_is_rigid(sform, np.asarray(header["pixdim"][1:4], dtype=float), path):
        if not q_code or s_code == _SCANNER or _forms_agree(sform, qform):
            if q_code:
                _warn_if_forms_disagree(sform, qform, f"sform (code {int(s_code)})", path)
            return sform
    if q_code:
        if s_code:
            _warn_if_forms_disagree(sform, qform, f"qform (code {int(q_code)})", path)
        return qform
    raise ImageReadError(f"{path}: cannot read image: the sform is not a rotation times a scale and no qform is set")


_Geometry = tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]


def _geometry(header: nib.Nifti1Header, ndim: int, path: Path) -> _Geometry:
    """Spacing, origin and direction in ITK order for the first ``ndim`` (<= 3) spatial axes."""
    spacing = tuple(float(s) for s in header["pixdim"][1 : ndim + 1])
    affine = _chosen_affine(header, path)
    if affine is None:
        return spacing, (0.0,) * ndim, tuple(np.eye(ndim).ravel())
    lps = _LPS_FROM_RAS @ affine
    columns = lps[:ndim, :ndim]
    direction = columns / np.linalg.norm(columns, axis=0)
    return spacing, tuple(lps[:ndim, 3].tolist()), tuple(direction.ravel().tolist())


@contextmanager
def _nibabel_quiet() -> Iterator[None]:
    """Stop nibabel printing its header fixes (naming no file) for the block; ``_check_header`` logs them."""
    with _NIBABEL_LOCK:
        level = _NIBABEL_LOGGER.level
        _NIBABEL_LOGGER.setLevel(logging.CRITICAL)
        try:
            yield
        finally:
            _NIBABEL_LOGGER.setLevel(level)


def _check_header(path: Path, header: nib.Nifti1Header) -> None:
    """Refuse bad spacing and a claimed size the file cannot hold; log what nibabel would fix silently."""
    raw_bytes = header.binaryblock
    with ImageOpener(path) as stream:
        raw = type(header).from_fileobj(stream, check=False)
    shape = raw.get_data_shape()
    spatial = min(max(len(shape), 1), 3)
    pixdim = np.asarray(raw["pixdim"][1 : spatial + 1], dtype=float)
    bad = [f"pixdim[{i + 1}] = {value:g}" for i, value in enumerate(pixdim) if not np.isfinite(value) or value <= 0]
    if bad:
        raise ImageReadError(
            f"{path}: cannot read image: voxel spacing must be a positive finite number of mm: {', '.join(bad)}"
        )
    compressed = path.name.lower().endswith(".gz")
    size = path.stat().st_size
    stored = size if compressed else size - int(raw.get_data_offset())
    check_claimed_size(path, shape, raw.get_data_dtype().itemsize, stored, compressed)
    problems = type(header).diagnose_binaryblock(raw.binaryblock)
    if problems and raw_bytes != raw.binaryblock:
        logger.warning("%s: nibabel fixed the header: %s", path, " ".join(problems.split()))


def _load(path: Path) -> tuple[np.ndarray, nib.Nifti1Header]:
    """Voxels in nibabel order (x, y, z[, c]), scaled by ``scl_slope``/``scl_inter`` as ITK does."""
    try:
        with _nibabel_quiet():
            nii = nib.load(path)
        if not isinstance(nii, nib.Nifti1Image | nib.Nifti2Image):
            raise ImageReadError(f"{path}: cannot read image: nibabel reads it as {type(nii).__name__}, not NIfTI")
        _check_header(path, nii.header)
        data = np.asanyarray(nii.dataobj)
    except _READ_ERRORS as err:
        if isinstance(err, ImageReadError):
            raise
        raise ImageReadError(f"{path}: cannot read image: {err}") from err
    if data.ndim == 5 and data.shape[3] == 1:  # ITK stores vector images as (x, y, z, 1, c)
        data = data[:, :, :, 0]
    return data, nii.header


def _to_image(data: np.ndarray, header: nib.Nifti1Header, path: Path) -> Image:
    spacing, origin, direction = _geometry(header, data.ndim, path)
    array = np.ascontiguousarray(data.transpose(tuple(reversed(range(data.ndim)))))
    return Image(array, spacing, origin, direction, source=str(path))


def read_nifti(path: Path) -> Image:
    """Read a 2-D or 3-D NIfTI file (a 4-D file with one volume is accepted)."""
    data, header = _load(path)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim not in (2, 3):
        raise ImageReadError(
            f"{path}: cannot read image: shape {data.shape} is not 2-D or 3-D; "
            "use read_image_channels for multi-channel (4-D) files"
        )
    return _to_image(data, header, path)


def read_nifti_channels(path: Path) -> list[Image]:
    """Read a NIfTI file as channels: a 4-D file splits along its last axis, a 2-D/3-D file is one channel."""
    data, header = _load(path)
    if data.ndim in (2, 3):
        return [_to_image(data, header, path)]
    if data.ndim != 4:
        raise ImageReadError(f"{path}: cannot read image: shape {data.shape} is not 2-D, 3-D or 4-D")
    return [_to_image(data[..., c], header, path) for c in range(data.shape[3])]


def nifti_affine(image: Image) -> np.ndarray:
    """The RAS voxel-to-world affine nibabel would hold for ``image`` (2-D images get a unit third axis)."""
    n = image.ndim
    if n not in (2, 3):
        raise ValueError(f"{image.source or 'image'}: NIfTI holds 2-D or 3-D images, not {n}-D")
    lps = np.eye(4)
    direction = np.asarray(image.direction, dtype=float).reshape(n, n)
    lps[:n, :n] = direction * np.asarray(image.spacing, dtype=float)
    lps[:n, 3] = image.origin
    return _LPS_FROM_RAS @ lps


def write_nifti(image: Image, path: Path) -> None:
    """Write a 2-D or 3-D image with qform and sform both set to the same "scanner" transform."""
    affine = nifti_affine(image)
    data = image.array.transpose(tuple(reversed(range(image.ndim))))
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    elif data.dtype == np.float16:
        data = data.astype(np.float32)
    try:
        nii = nib.Nifti1Image(data, affine, dtype=data.dtype)
    except HeaderDataError as err:
        raise ValueError(f"{path}: cannot write voxels of type {data.dtype} to NIfTI: {err}") from err
    nii.set_qform(affine, code=_SCANNER)
    nii.set_sform(affine, code=_SCANNER)
    nii.header.set_xyzt_units("mm", "sec")
    nib.save(nii, path)
