"""The geometry fields of NRRD and MetaImage headers, checked before SimpleITK reads the file.

SimpleITK (ITK's NrrdImageIO and MetaImageIO) honours most geometry fields but takes some silently wrong: a sheared
or scaled direction matrix is kept as it is, a negative spacing becomes a flip, a number it cannot parse or a field
name it does not know becomes a default, and units are ignored. The text header is read here first, and every field
that moves voxels in space is honoured (by SimpleITK, or converted here) or refused, naming the file and the field.

NRRD (teem's format; field names are case- and space-insensitive):

* ``space``: the patient spaces (RAS, LAS, LPS, also spelt out) are turned into LPS by ITK; ``scanner-xyz``,
  ``3D-right-handed`` or only ``space dimension`` are taken as LPS coordinates, as ITK does; a left-handed space is
  refused (taking it as LPS would mirror the image);
* ``space directions``: every spatial axis's vector finite, not zero, and perpendicular to the others;
* ``space origin``: finite, or all ``nan`` (unknown, taken as 0 like an absent origin);
* ``space units`` and ``units``: mm (or unset), or m, cm and µm converted to mm; one unit for every axis;
* ``spacings``: finite and positive on every spatial axis (ITK would turn -2 into a flip and nan into 1);
* ``axis mins`` with ``centers``: the origin, the first cell's centre unless ``node`` (ITK honours both); ``axis
  maxs``, which ITK ignores, must agree with them and ``spacings``;
* ``kinds``: ``domain`` and ``space`` axes are spatial; vector, list and colour axes are channels (ITK writes every
  multi-component image as ``vector``); a ``time`` axis and kinds whose values are geometric (points, gradients,
  normals, quaternions, matrices) are refused;
* ``measurement frame`` (the frame of vector values, which are never turned) and ``thicknesses`` are ignored;
* a geometry field written as a key/value pair (``space origin:=...``), which ITK ignores, is refused.

MetaImage (ITK's MetaIO; keys are case-sensitive):

* ``ElementSpacing``, or without it ``ElementSize`` (which MetaIO then takes as spacing): NDims finite positive
  numbers; ``ElementSize`` beside ``ElementSpacing`` is the voxel's extent, not its place, and is ignored;
* ``Offset`` (or ``Position``, ``Origin``): NDims finite numbers; ``TransformMatrix`` (or ``Rotation``,
  ``Orientation``): NDims² finite numbers, orthonormal; aliases given twice must agree;
* ``AnatomicalOrientation``, which ITK ignores, must fit the matrix (identity when absent) in one of the two
  conventions in use: ITK writes the letter each axis runs from (``RAI`` for identity), the MetaIO documentation
  the letter it runs to (``LPS``);
* ``CenterOfRotation`` does not move voxels and is ignored;
* a geometry key in another case (``elementspacing``), which MetaIO ignores, is refused.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from mambaseg.io.errors import ImageReadError
from mambaseg.io.image import GEOMETRY_TOLERANCE

_HEADER_BYTES = 1 << 20
_MM_PER_UNIT = {
    **dict.fromkeys(("", "???", "mm", "millimeter", "millimeters", "millimetre", "millimetres"), 1.0),
    **dict.fromkeys(("m", "meter", "meters", "metre", "metres"), 1000.0),
    **dict.fromkeys(("cm", "centimeter", "centimeters", "centimetre", "centimetres"), 10.0),
    **dict.fromkeys(("um", "µm", "μm", "micron", "microns", "micrometer", "micrometers", "micrometre"), 0.001),
}
_SPATIAL_KINDS = ("domain", "space", "???", "none")
_GEOMETRIC_KINDS = (
    "point",
    "covariant-vector",
    "normal",
    "3-gradient",
    "3-normal",
    "quaternion",
    "2d-symmetric-matrix",
    "2d-masked-symmetric-matrix",
    "2d-matrix",
    "2d-masked-matrix",
    "3d-symmetric-matrix",
    "3d-masked-symmetric-matrix",
    "3d-matrix",
    "3d-masked-matrix",
)
_NRRD_NAMES = {
    "space": "space",
    "spacedimension": "space dimension",
    "spacedirections": "space directions",
    "spaceorigin": "space origin",
    "spaceunits": "space units",
    "units": "units",
    "spacings": "spacings",
    "axismins": "axis mins",
    "axismaxs": "axis maxs",
    "centers": "centers",
    "centerings": "centers",
    "kinds": "kinds",
}
_META_ALIASES = {
    "Offset": ("Offset", "Position", "Origin"),
    "TransformMatrix": ("TransformMatrix", "Rotation", "Orientation"),
}
_META_KEYS = ("NDims", "DimSize", "ElementSpacing", "ElementSize", "AnatomicalOrientation", "CenterOfRotation")
_META_CASE = {key.lower(): key for key in (*_META_KEYS, *_META_ALIASES["Offset"], *_META_ALIASES["TransformMatrix"])}
_FROM_LETTER = {"R": (0, 1.0), "L": (0, -1.0), "A": (1, 1.0), "P": (1, -1.0), "I": (2, 1.0), "S": (2, -1.0)}
"""ITK's letters: the side each axis runs from, as (LPS axis, sign of the direction cosine); RAI is the identity."""


def check_geometry_fields(path: Path) -> float:
    """Refuse the geometry fields of a NRRD or MetaImage header that SimpleITK would take wrongly.

    Returns:
        The millimetres in one unit of the file's coordinates (1 unless NRRD units say m, cm or µm), by which
        SimpleITK's spacing and origin are to be multiplied.
    """
    suffix = path.suffix.lower()
    if suffix == ".nrrd":
        return _check_nrrd(path, _nrrd_fields(path))
    if suffix in (".mha", ".mhd"):
        _check_metaimage(path, _metaimage_fields(path))
    return 1.0


def _refuse(path: Path, what: str) -> ImageReadError:
    return ImageReadError(f"{path}: cannot read image: {what}")


def _header_lines(path: Path, ends_at_blank_line: bool) -> list[str]:
    """The lines of the file's first MiB (a text header, then perhaps voxels), up to a blank line if asked."""
    with path.open("rb") as stream:
        head = stream.read(_HEADER_BYTES).replace(b"\r\n", b"\n")
    if ends_at_blank_line:
        head = head.split(b"\n\n", 1)[0]
    return head.decode("utf-8", errors="replace").split("\n")


def _numbers(path: Path, field: str, text: str, count: int | None = None) -> np.ndarray:
    """Whitespace-separated numbers (``nan`` allowed), ``count`` of them when given."""
    try:
        values = np.array([float(v) for v in text.split()])
    except ValueError as err:
        raise _refuse(path, f"{field} = {text!r} is not a list of numbers") from err
    if count is not None and len(values) != count:
        raise _refuse(path, f"{field} = {text!r} has {len(values)} values, the image needs {count}")
    return values


def _nrrd_fields(path: Path) -> dict[str, str]:
    """The NRRD header's fields by normalised name (lower case, no spaces); empty when it is not NRRD."""
    lines = _header_lines(path, ends_at_blank_line=True)
    if not lines[0].startswith("NRRD"):
        return {}
    fields = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        key = "".join(name.lower().split())
        if line.startswith("#") or not colon:
            continue
        if value.startswith("="):
            if key in _NRRD_NAMES:
                raise _refuse(
                    path,
                    f"NRRD line {line!r} is a key/value pair ('{name}:='), which ITK ignores, not the "
                    f"field '{_NRRD_NAMES[key]}: '",
                )
            continue
        fields["centers" if key == "centerings" else key] = value.strip()
    return fields


def _check_nrrd(path: Path, fields: dict[str, str]) -> float:
    try:
        sizes = [int(v) for v in fields["sizes"].split()]
    except (KeyError, ValueError):
        return 1.0  # SimpleITK refuses a header without sizes itself
    n = len(sizes)
    kinds = [kind.lower() for kind in fields.get("kinds", "domain " * n).split()]
    if len(kinds) != n:
        raise _refuse(path, f"NRRD field 'kinds' = {fields['kinds']!r} names {len(kinds)} axes of {n}")
    for axis, kind in enumerate(kinds):
        if kind == "time" or kind in _GEOMETRIC_KINDS:
            raise _refuse(
                path,
                f"NRRD field 'kinds' gives axis {axis} the kind '{kind}': only spatial axes and channels (vector, "
                "list, colour) are read, not time or values that are points, gradients, normals, rotations or tensors",
            )
    spatial = [axis for axis, kind in enumerate(kinds) if kind in _SPATIAL_KINDS]
    if fields.get("space", "").lower().startswith("3d-left-handed"):
        raise _refuse(
            path, f"NRRD field 'space' = {fields['space']!r}: a left-handed space taken as LPS would mirror the image"
        )
    _check_nrrd_directions(path, fields, n, spatial)
    origin = _nrrd_vectors(path, "space origin", fields.get("spaceorigin", ""))
    if origin and not np.all(np.isnan(origin[0])) and not np.all(np.isfinite(origin[0])):
        raise _refuse(path, f"NRRD field 'space origin' = {fields['spaceorigin']!r} is not finite")
    _check_nrrd_axes(path, fields, sizes, spatial)
    return _nrrd_mm_per_unit(path, fields, spatial)


def _nrrd_vectors(path: Path, field: str, text: str) -> list[np.ndarray | None]:
    """``(a,b,c) none (d,e,f)`` as vectors, None for ``none``."""
    tokens = re.findall(r"\([^)]*\)|none", text, flags=re.IGNORECASE)
    return [
        None if t.lower() == "none" else _numbers(path, f"NRRD field '{field}'", t[1:-1].replace(",", " "))
        for t in tokens
    ]


def _check_nrrd_directions(path: Path, fields: dict[str, str], n: int, spatial: list[int]) -> None:
    if "spacedirections" not in fields:
        return
    text = fields["spacedirections"]
    vectors = _nrrd_vectors(path, "space directions", text)
    if len(vectors) != n or any(vectors[axis] is None for axis in spatial):
        raise _refuse(path, f"NRRD field 'space directions' = {text!r} does not give a vector for each spatial axis")
    matrix = np.array([vectors[axis] for axis in spatial])
    norms = np.linalg.norm(matrix, axis=1)
    if not np.all(np.isfinite(matrix)) or np.any(norms == 0):
        raise _refuse(path, f"NRRD field 'space directions' = {text!r} holds a zero or non-finite vector")
    cosines = matrix / norms[:, None]
    if np.abs(cosines @ cosines.T - np.eye(len(spatial))).max() > GEOMETRY_TOLERANCE:
        raise _refuse(
            path,
            f"NRRD field 'space directions' = {text!r}: the axes are not perpendicular (a shear), which an image "
            "geometry (spacing times a rotation) cannot hold",
        )


def _check_nrrd_axes(path: Path, fields: dict[str, str], sizes: list[int], spatial: list[int]) -> None:
    """``spacings`` positive; ``axis maxs`` (ignored by ITK) agreeing with ``axis mins``, ``spacings``, ``centers``."""
    n = len(sizes)
    per_axis = {
        key: _numbers(path, f"NRRD field '{_NRRD_NAMES[key]}'", fields[key], n)
        for key in ("spacings", "axismins", "axismaxs")
        if key in fields
    }
    centers = [c.lower() for c in fields.get("centers", "??? " * n).split()]
    for axis in spatial:
        spacing = per_axis["spacings"][axis] if "spacings" in per_axis else 1.0
        if not (math.isfinite(spacing) and spacing > 0):
            raise _refuse(
                path, f"NRRD field 'spacings' gives axis {axis} the spacing {spacing:g}, not a positive number"
            )
        top = per_axis["axismaxs"][axis] if "axismaxs" in per_axis else math.nan
        if math.isnan(top):
            continue
        bottom = per_axis["axismins"][axis] if "axismins" in per_axis else math.nan
        cells = sizes[axis] - (1 if axis < len(centers) and centers[axis] == "node" else 0)
        expected = bottom + spacing * cells if "spacings" in per_axis else math.nan
        if not abs(expected - top) <= GEOMETRY_TOLERANCE * max(1.0, abs(top)):
            raise _refuse(
                path,
                f"NRRD field 'axis maxs' gives axis {axis} the maximum {top:g}, which ITK ignores; it must agree with "
                f"'axis mins' and 'spacings' (min + spacing x {cells}) or be left out",
            )


def _nrrd_mm_per_unit(path: Path, fields: dict[str, str], spatial: list[int]) -> float:
    units = re.findall(r'"([^"]*)"', fields.get("spaceunits", ""))
    axis_units = re.findall(r'"([^"]*)"', fields.get("units", ""))
    named = [("space units", u) for u in units] + [("units", axis_units[a]) for a in spatial if a < len(axis_units)]
    factors = set()
    for field, unit in named:
        if unit.strip().lower() not in _MM_PER_UNIT:
            raise _refuse(path, f"NRRD field '{field}' gives the unit {unit!r}; known lengths are mm, m, cm and µm")
        factors.add(_MM_PER_UNIT[unit.strip().lower()])
    if len(factors) > 1:
        raise _refuse(path, f"NRRD fields {sorted({f for f, _ in named})} mix units {[u for _, u in named]}")
    return factors.pop() if factors else 1.0


def _metaimage_fields(path: Path) -> dict[str, str]:
    """The MetaImage header's keys up to ``ElementDataFile``."""
    fields = {}
    for line in _header_lines(path, ends_at_blank_line=False):
        key, equals, value = line.partition("=")
        key = key.strip()
        if not equals:
            continue
        if key == "ElementDataFile":
            break
        if key.lower() in _META_CASE and key != _META_CASE[key.lower()]:
            raise _refuse(
                path,
                f"MetaImage key {key!r} is ignored by MetaIO, whose keys are case-sensitive: "
                f"write {_META_CASE[key.lower()]!r}",
            )
        fields[key] = value.strip()
    return fields


def _check_metaimage(path: Path, fields: dict[str, str]) -> None:
    try:
        n = int(fields["NDims"])
    except (KeyError, ValueError):
        return  # SimpleITK refuses a header without NDims itself
    spacing_key = "ElementSpacing" if "ElementSpacing" in fields else "ElementSize"
    if spacing_key in fields:
        spacing = _numbers(path, f"MetaImage {spacing_key}", fields[spacing_key], n)
        if not np.all(np.isfinite(spacing) & (spacing > 0)):
            raise _refuse(
                path, f"MetaImage {spacing_key} = {fields[spacing_key]!r}: spacing must be positive finite mm"
            )
    _meta_alias(path, fields, "Offset", n)
    matrix_key, matrix = _meta_alias(path, fields, "TransformMatrix", n * n)
    columns = np.eye(n) if matrix is None else matrix.reshape(n, n)  # MetaIO lists the matrix column by column
    if np.abs(columns @ columns.T - np.eye(n)).max() > GEOMETRY_TOLERANCE:
        raise _refuse(
            path,
            f"MetaImage {matrix_key} = {fields[matrix_key]!r} is not orthonormal (a shear or a scale), which a "
            "direction matrix cannot be; put the scale in ElementSpacing",
        )
    if "AnatomicalOrientation" in fields:
        _check_anatomical_orientation(
            path, fields["AnatomicalOrientation"], columns, matrix_key or "no TransformMatrix"
        )


def _meta_alias(path: Path, fields: dict[str, str], name: str, count: int) -> tuple[str | None, np.ndarray | None]:
    """The values of the first key of ``name``'s aliases present; finite, and the same for every alias given."""
    given = {}
    for key in _META_ALIASES[name]:
        if key in fields:
            given[key] = _numbers(path, f"MetaImage {key}", fields[key], count)
            if not np.all(np.isfinite(given[key])):
                raise _refuse(path, f"MetaImage {key} = {fields[key]!r} is not finite")
    if not given:
        return None, None
    first, *others = given
    for other in others:
        if not np.allclose(given[first], given[other], rtol=0.0, atol=GEOMETRY_TOLERANCE):
            raise _refuse(path, f"MetaImage {first} = {fields[first]!r} and {other} = {fields[other]!r} differ")
    return first, given[first]


def _check_anatomical_orientation(path: Path, letters: str, columns: np.ndarray, matrix: str) -> None:
    """``letters`` (one per axis, ``?`` unknown) must name each column's main direction in ITK's or MetaIO's sense."""
    code = letters.upper()
    known = [letter for letter in code if letter != "?"]
    if (
        len(code) != len(columns)
        or any(letter not in _FROM_LETTER for letter in known)
        or len({_FROM_LETTER[letter][0] for letter in known}) != len(known)
    ):
        raise _refuse(path, f"MetaImage AnatomicalOrientation = {letters!r} is not one of R/L, A/P, S/I per axis")

    def fits(sign: float) -> bool:
        for column, letter in zip(columns, code, strict=True):
            if letter == "?":
                continue
            axis, towards = _FROM_LETTER[letter]
            cosine = column[axis] * towards * sign if axis < len(column) else 0.0
            if cosine <= 0 or cosine < np.abs(column).max() - GEOMETRY_TOLERANCE:
                return False
        return True

    if not fits(1.0) and not fits(-1.0):
        raise _refuse(
            path,
            f"MetaImage AnatomicalOrientation = {letters!r} contradicts {matrix} (the direction ITK uses), whether its "
            "letters name the side each axis runs from (as ITK writes them) or runs to; correct one of the two",
        )
