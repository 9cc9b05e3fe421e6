"""NIfTI-1 and NIfTI-2 reading and writing through nibabel, with the geometry SimpleITK would report for the same file.

nibabel maps voxel (i, j, k) to RAS millimetres with a 4x4 affine; ITK uses LPS, so the x and y rows of the
affine change sign. Which of the header's two transforms is used follows ITK's NIfTI reader: the sform when it is
a rotation times a scale and either is coded "scanner" (1), is the only one coded, or agrees with the qform; the
qform otherwise. As in ITK, spacing comes from ``pixdim`` and direction from the normalised affine columns.

Every header field that moves voxels in space is honoured or refused, naming the file and the field:

* ``pixdim[1..3]`` zero, negative or not finite: an error (nibabel would turn 0 into 1 and -2 into 2, and only
  print so, naming no file);
* ``xyzt_units``: metres and micrometres are converted to mm (spacing and origin), as ITK does; 0 (unknown) is
  taken as mm; the undefined spatial codes 4 to 7 are an error;
* ``qform_code``/``sform_code`` outside 0..5: an error (ITK would use the transform, nibabel would drop it); both
  0 (the ANALYZE fallback, orientation unknown): read as ITK does (origin 0, identity direction, spacing from
  ``pixdim``), with a warning, since nibabel and the NIfTI standard's method 1 would each flip other axes;
* a coded transform with a field that is not finite (``quatern_*``, ``qoffset_*``, ``srow_*``), a quaternion with
  b² + c² + d² > 1, or a ``pixdim[0]`` (qfac) other than -1, 0 (taken as 1) or 1: an error (ITK and nibabel
  would read each differently);
* an sform that is not a rotation times a scale (a shear): the qform is used, as ITK does, with a warning; with no
  qform, an error;
* sform and qform both coded but disagreeing by more than ``GEOMETRY_TOLERANCE`` (in mm and cosines): a warning
  naming the file, both origins and the transform used (the ITK choice above);
* a 2-D file (``dim[0]`` = 2) whose transform tilts its plane out of x-y or lifts it off z = 0: an error, since a
  2-D geometry cannot hold either (ITK would garble or drop it); a one-slice 3-D file can;
* ``intent_code`` of values that are geometric quantities or not voxels (displacement vectors, matrices,
  quaternions, point sets, triangles): an error; ``NIFTI_INTENT_VECTOR`` is read as channels, since ITK writes
  every multi-component image with it;
* the 4th axis (``dim[4]``, time in the standard) holds channels (the Decathlon layout), and a 5th of vector
  components (``dim[4]`` = 1) too; ``pixdim[4]``, ``toffset``, ``slice_duration``, ``slice_code`` and ``dim_info``
  describe acquisition timing and encoding, not positions, and are ignored;
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
_XFORM_CODES = range(6)  # NIFTI_XFORM_UNKNOWN (0) to NIFTI_XFORM_TEMPLATE_OTHER (5)
_MM_PER_UNIT = {0: 1.0, 1: 1000.0, 2: 1.0, 3: 0.001}  # xyzt_units & 7: unknown (taken as mm), metre, mm, micrometre
_NOT_AN_IMAGE = {
    1004: "NIFTI_INTENT_GENMATRIX, a matrix per voxel",
    1005: "NIFTI_INTENT_SYMMATRIX, a symmetric matrix (a tensor) per voxel",
    1006: "NIFTI_INTENT_DISPVECT, a displacement field",
    1008: "NIFTI_INTENT_POINTSET, a set of points",
    1009: "NIFTI_INTENT_TRIANGLE, triangles of a surface",
    1010: "NIFTI_INTENT_QUATERNION, a rotation per voxel",
}
_QFORM_FIELDS = ("quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z")
_SFORM_FIELDS = ("srow_x", "srow_y", "srow_z")
_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, ImageFileError, HeaderDataError)
_NIBABEL_LOGGER = logging.getLogger("nibabel.global")
_NIBABEL_LOCK = threading.Lock()


def _refuse(path: Path, what: str) -> ImageReadError:
    return ImageReadError(f"{path}: cannot read image: {what}")


def _sform_is_rigid(sform: np.ndarray, pixdim: np.ndarray, path: Path) -> bool:
    """Whether the sform is a rotation (or reflection) times positive column scales."""
    if not np.allclose(sform[3], [0.0, 0.0, 0.0, 1.0]):
        return False
    norms = np.linalg.norm(sform[:3, :3], axis=0)
    if np.any(norms == 0):
        return False
    rotation = sform[:3, :3] / norms
    if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-4):
        return False
    if np.any(np.abs(norms - pixdim) > 1e-3):
        logger.warning("%s: sform column scales %s differ from pixdim %s; spacing follows pixdim", path, norms, pixdim)
    return True


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


def _chosen_affine(header: nib.Nifti1Header, path: Path) -> tuple[np.ndarray, str] | None:
    """The RAS affine ITK would use and its name (``"sform"``, ``"qform"``), or None when neither is coded."""
    qform, q_code = header.get_qform(coded=True)
    sform, s_code = header.get_sform(coded=True)
    if not q_code and not s_code:
        return None
    if s_code and not _sform_is_rigid(sform, np.asarray(header["pixdim"][1:4], dtype=float), path):
        if not q_code:
            raise _refuse(
                path,
                "the sform (srow_x, srow_y, srow_z) is not a rotation times a scale (it shears) and no qform is set; "
                "ITK refuses it too",
            )
        logger.warning(
            "%s: the sform (sform_code %d) is not a rotation times a scale (it shears); using the qform "
            "(qform_code %d), as ITK does",
            path,
            int(s_code),
            int(q_code),
        )
        return qform, "qform"
    if s_code and (not q_code or s_code == _SCANNER or _forms_agree(sform, qform)):
        if q_code:
            _warn_if_forms_disagree(sform, qform, f"sform (code {int(s_code)})", path)
        return sform, "sform"
    if s_code:
        _warn_if_forms_disagree(sform, qform, f"qform (code {int(q_code)})", path)
    return qform, "qform"


_Geometry = tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]


def _geometry(header: nib.Nifti1Header, ndim: int, path: Path) -> _Geometry:
    """Spacing and origin in mm, and direction, in ITK order for the first ``ndim`` (2 or 3) spatial axes."""
    mm = _MM_PER_UNIT[int(header["xyzt_units"]) & 7]
    spacing = tuple(float(s) * mm for s in header["pixdim"][1 : ndim + 1])
    chosen = _chosen_affine(header, path)
    if chosen is None:
        logger.warning(
            "%s: neither qform_code nor sform_code is set, so the orientation is unknown and readers differ; "
            "read as ITK reads it: origin 0, identity direction, spacing from pixdim",
            path,
        )
        return spacing, (0.0,) * ndim, tuple(np.eye(ndim).ravel())
    affine, name = chosen
    lps = _LPS_FROM_RAS @ affine
    if ndim == 2:
        _check_in_plane(lps, name, mm, path)
    columns = lps[:ndim, :ndim]
    direction = columns / np.linalg.norm(columns, axis=0)
    return spacing, tuple((lps[:ndim, 3] * mm).tolist()), tuple(direction.ravel().tolist())


def _check_in_plane(lps: np.ndarray, name: str, mm: float, path: Path) -> None:
    """A 2-D image's transform must keep its plane in x-y at z = 0: a 2-D geometry holds neither a tilt nor a height."""
    tilt = np.abs(lps[2, :2] / np.linalg.norm(lps[:3, :2], axis=0)).max()
    if tilt > GEOMETRY_TOLERANCE:
        where = f"tilts its plane out of x-y (z cosine {tilt:.3g})"
    elif abs(lps[2, 3]) > GEOMETRY_TOLERANCE:
        where = f"places its plane at z = {lps[2, 3] * mm:g} mm"
    else:
        return
    raise _refuse(
        path,
        f"a 2-D image (dim[0] = 2) whose {name} {where}, which a 2-D geometry cannot hold; write it as a 3-D file "
        "with one slice",
    )


@contextmanager
def _nibabel_quiet() -> Iterator[None]:
    """Stop nibabel printing its header fixes (naming no file) for the block; ``_load`` logs them."""
    with _NIBABEL_LOCK:
        level = _NIBABEL_LOGGER.level
        _NIBABEL_LOGGER.setLevel(logging.CRITICAL)
        try:
            yield
        finally:
            _NIBABEL_LOGGER.setLevel(level)


def _check_spacing(path: Path, raw: nib.Nifti1Header, spatial: int) -> None:
    pixdim = np.asarray(raw["pixdim"][1 : spatial + 1], dtype=float)
    bad = [f"pixdim[{i + 1}] = {value:g}" for i, value in enumerate(pixdim) if not np.isfinite(value) or value <= 0]
    if bad:
        raise _refuse(path, f"voxel spacing must be a positive finite number of mm: {', '.join(bad)}")
    units = int(raw["xyzt_units"])
    if units & 7 not in _MM_PER_UNIT:
        raise _refuse(
            path, f"xyzt_units = {units}: spatial unit code {units & 7} is undefined (0 unknown, 1 m, 2 mm, 3 µm)"
        )


def _check_transform_fields(path: Path, raw: nib.Nifti1Header) -> None:
    """Refuse transform fields that ITK and nibabel would read differently, or that are not numbers."""
    codes = {name: int(raw[name]) for name in ("qform_code", "sform_code")}
    for name, code in codes.items():
        if code not in _XFORM_CODES:
            raise _refuse(
                path,
                f"{name} = {code} is not a NIfTI transform code (0 to 5); ITK would use the transform, nibabel drop it",
            )
    fields = (_QFORM_FIELDS if codes["qform_code"] else ()) + (_SFORM_FIELDS if codes["sform_code"] else ())
    bad = [f"{name} = {np.asarray(raw[name]).tolist()}" for name in fields if not np.all(np.isfinite(raw[name]))]
    if bad:
        raise _refuse(path, f"the coded transform holds values that are not finite numbers: {', '.join(bad)}")
    if not codes["qform_code"]:
        return
    qfac = float(raw["pixdim"][0])
    if qfac not in (-1.0, 0.0, 1.0):
        raise _refuse(
            path, f"pixdim[0] (qfac) = {qfac:g} must be 1 or -1 (0 is taken as 1); ITK would take its sign, nibabel 1"
        )
    bcd = np.array([raw["quatern_b"], raw["quatern_c"], raw["quatern_d"]], dtype=np.float64)
    w2 = 1.0 - float(bcd @ bcd)
    if w2 < -abs(float(raw.quaternion_threshold)):
        raise _refuse(
            path,
            f"quatern_b, quatern_c, quatern_d = {', '.join(f'{v:.6g}' for v in bcd)}: b² + c² + d² = {1.0 - w2:.6g} "
            "exceeds 1, so they are not a rotation",
        )


def _check_intent(path: Path, raw: nib.Nifti1Header) -> None:
    code = int(raw["intent_code"])
    if code in _NOT_AN_IMAGE:
        raise _refuse(
            path,
            f"intent_code = {code} ({_NOT_AN_IMAGE[code]}): its values are geometric quantities or not voxels, "
            "not an image to segment",
        )


def _stored_header(path: Path) -> nib.Nifti1Header | None:
    """The header as stored, before nibabel's fixes; None when it is not a single-file NIfTI-1 or NIfTI-2 header."""
    with ImageOpener(path) as stream:
        start = stream.read(4)
    sizes = {int.from_bytes(start, "little"), int.from_bytes(start, "big")}
    for klass in (nib.Nifti1Header, nib.Nifti2Header):
        if klass.sizeof_hdr in sizes:
            with ImageOpener(path) as stream:
                raw = klass.from_fileobj(stream, check=False)
            return raw if raw["magic"].item() == klass.single_magic else None
    return None


def _check_header(path: Path, raw: nib.Nifti1Header) -> None:
    """Refuse geometry fields that are wrong or ambiguous, and a claimed size the file cannot hold."""
    shape = raw.get_data_shape()
    _check_spacing(path, raw, min(max(len(shape), 1), 3))
    _check_transform_fields(path, raw)
    _check_intent(path, raw)
    compressed = path.name.lower().endswith(".gz")
    size = path.stat().st_size
    stored = size if compressed else size - int(raw.get_data_offset())
    check_claimed_size(path, shape, raw.get_data_dtype().itemsize, stored, compressed)


def _load(path: Path) -> tuple[np.ndarray, nib.Nifti1Header]:
    """Voxels in nibabel order (x, y, z[, c]), scaled by ``scl_slope``/``scl_inter`` as ITK does.

    The stored header is checked before nibabel reads it (nibabel fixes some fields and fails on others, naming no
    file); what nibabel fixed is logged as a warning naming the file.
    """
    try:
        raw = _stored_header(path)
        if raw is not None:
            _check_header(path, raw)
        with _nibabel_quiet():
            nii = nib.load(path)
        if raw is None or not isinstance(nii, nib.Nifti1Image | nib.Nifti2Image):
            raise ImageReadError(f"{path}: cannot read image: nibabel reads it as {type(nii).__name__}, not NIfTI")
        problems = type(raw).diagnose_binaryblock(raw.binaryblock)
        if problems and nii.header.binaryblock != raw.binaryblock:
            logger.warning("%s: nibabel fixed the header: %s", path, " ".join(problems.split()))
        data = np.asanyarray(nii.dataobj)
    except _READ_ERRORS as err:
        if isinstance(err, ImageReadError):
            raise
        raise ImageReadError(f"{path}: cannot read image: {err}") from err
    if data.ndim == 5 and data.shape[3] == 1:  # ITK stores vector images as (x, y, z, 1, c)
        data = data[:, :, :, 0]
    return data, nii.header


def _to_images(volumes: list[np.ndarray], header: nib.Nifti1Header, path: Path) -> list[Image]:
    """Images of volumes in nibabel order (x, y[, z]), all sharing the header's geometry."""
    geometry = _geometry(header, volumes[0].ndim, path)
    axes = tuple(reversed(range(volumes[0].ndim)))
    return [Image(np.ascontiguousarray(volume.transpose(axes)), *geometry, source=str(path)) for volume in volumes]


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
    return _to_images([data], header, path)[0]


def read_nifti_channels(path: Path) -> list[Image]:
    """Read a NIfTI file as channels: a 4-D file splits along its last axis, a 2-D/3-D file is one channel."""
    data, header = _load(path)
    if data.ndim in (2, 3):
        return _to_images([data], header, path)
    if data.ndim != 4:
        raise ImageReadError(f"{path}: cannot read image: shape {data.shape} is not 2-D, 3-D or 4-D")
    return _to_images([data[..., c] for c in range(data.shape[3])], header, path)


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
