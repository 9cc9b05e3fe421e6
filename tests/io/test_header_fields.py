"""Every header field that moves voxels in space, format by format: honoured (voxels land where the standard puts them)
or refused naming the file and the field. NIfTI headers are made with nibabel and patched as stored; NRRD and
MetaImage headers are written by hand in front of raw voxels."""

from __future__ import annotations

import io
import logging

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from mambaseg.io import ImageReadError, from_sitk, read_image, read_image_channels
from tests.io.test_nifti import assert_same

SHAPE = (4, 5, 6)  # (x, y, z) as the headers give it
VOXELS = np.arange(np.prod(SHAPE), dtype=np.int16)
AFFINE = np.array([[2.0, 0, 0, 10], [0, 3.0, 0, 20], [0, 0, 4.0, 30], [0, 0, 0, 1]])  # RAS
VOXEL = np.array([1, 2, 3])  # (x, y, z) index of a voxel whose position the tests check


def _lps(point) -> np.ndarray:
    return np.asarray(point, dtype=float) * [-1, -1, 1]


def _position(image, xyz=VOXEL) -> np.ndarray:
    """Physical position (LPS mm) of voxel ``xyz`` given as (x, y, z)."""
    return image.physical_points(np.asarray(xyz)[::-1])


def _refused(path, *fragments: str) -> str:
    with pytest.raises(ImageReadError) as info:
        read_image_channels(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    for fragment in fragments:
        assert fragment in message, message
    return message


# NIfTI


def _nifti(
    tmp_path, name="case.nii", affine=AFFINE, codes=(1, 1), klass=nib.Nifti1Image, data=None, pixdim=None, **stored
):
    """A NIfTI file made by nibabel, then ``stored`` header fields and ``pixdim`` entries ({index: value}) written
    as given (nibabel would fix some)."""
    data = VOXELS.reshape(SHAPE) if data is None else data
    nii = klass(data, affine)
    nii.set_qform(affine, code=codes[0])
    nii.set_sform(affine, code=codes[1])
    path = tmp_path / name
    nib.save(nii, path)
    raw = path.read_bytes()
    header = klass.header_class.from_fileobj(io.BytesIO(raw), check=False)
    for index, value in (pixdim or {}).items():
        header["pixdim"][index] = value
    for field, value in stored.items():
        header[field] = value
    path.write_bytes(header.binaryblock + raw[len(header.binaryblock) :])
    return path


@pytest.mark.parametrize("klass", [nib.Nifti1Image, nib.Nifti2Image])
@pytest.mark.parametrize(("units", "mm"), [(0, 1.0), (2, 1.0), (1, 1000.0), (3, 0.001), (2 | 8, 1.0), (1 | 16, 1000.0)])
def test_nifti_spatial_units_are_converted_to_mm_as_itk_does(tmp_path, klass, units, mm):
    path = _nifti(tmp_path, klass=klass, xyzt_units=units)  # 8 and 16 are time units (s, ms): no effect
    image = read_image(path)
    assert image.spacing == pytest.approx(np.array([2.0, 3.0, 4.0]) * mm)
    np.testing.assert_allclose(_position(image), _lps(AFFINE[:3, :3] @ VOXEL + AFFINE[:3, 3]) * mm, rtol=1e-6)
    if klass is nib.Nifti1Image:  # this SimpleITK reads no NIfTI-2
        assert_same(image, from_sitk(sitk.ReadImage(str(path)))[0], tol=1e-6 * mm)


def test_nifti_undefined_spatial_unit_code_is_refused(tmp_path):
    _refused(_nifti(tmp_path, xyzt_units=5 | 8), "xyzt_units = 13", "spatial unit code 5 is undefined")


@pytest.mark.parametrize(("qfac", "z_sign"), [(1.0, 1), (-1.0, -1), (0.0, 1)])
def test_nifti_qfac_flips_the_third_axis_as_itk_does_and_zero_is_one(tmp_path, qfac, z_sign):
    path = _nifti(tmp_path, codes=(1, 0), pixdim={0: qfac})
    image = read_image(path)
    assert np.asarray(image.direction).reshape(3, 3)[2, 2] == z_sign
    assert_same(image, from_sitk(sitk.ReadImage(str(path)))[0])


@pytest.mark.parametrize("qfac", [-0.5, 2.0])
def test_nifti_qfac_other_than_one_or_minus_one_is_refused(tmp_path, qfac):
    _refused(_nifti(tmp_path, codes=(1, 0), pixdim={0: qfac}), f"pixdim[0] (qfac) = {qfac:g}")


def test_nifti_qfac_is_not_read_when_no_qform_is_coded(tmp_path):
    image = read_image(_nifti(tmp_path, codes=(0, 1), pixdim={0: 2.0}))
    np.testing.assert_allclose(_position(image), _lps(AFFINE[:3, :3] @ VOXEL + AFFINE[:3, 3]))


@pytest.mark.parametrize(("field", "code"), [("qform_code", 7), ("sform_code", 9), ("qform_code", -1)])
def test_nifti_undefined_transform_code_is_refused(tmp_path, field, code):
    _refused(_nifti(tmp_path, **{field: code}), f"{field} = {code} is not a NIfTI transform code")


def test_nifti_template_code_5_is_a_transform(tmp_path):
    image = read_image(_nifti(tmp_path, codes=(0, 5)))
    np.testing.assert_allclose(_position(image), _lps(AFFINE[:3, :3] @ VOXEL + AFFINE[:3, 3]))


def test_nifti_without_coded_transforms_reads_as_itk_does_with_a_warning(tmp_path, caplog):
    path = _nifti(tmp_path, codes=(0, 0))
    with caplog.at_level(logging.WARNING, logger="mambaseg.io.nifti"):
        image = read_image(path)
    assert f"{path}: neither qform_code nor sform_code is set" in caplog.text
    assert image.origin == (0.0, 0.0, 0.0) and image.spacing == (2.0, 3.0, 4.0)
    assert_same(image, from_sitk(sitk.ReadImage(str(path)))[0])


@pytest.mark.parametrize(
    ("codes", "stored", "named"),
    [
        ((1, 0), {"qoffset_x": np.nan}, "qoffset_x = nan"),
        ((1, 0), {"quatern_c": np.inf}, "quatern_c = inf"),
        ((0, 1), {"srow_y": [0.0, 3.0, 0.0, np.nan]}, "srow_y = [0.0, 3.0, 0.0, nan]"),
        ((1, 1), {"srow_x": [np.inf, 0.0, 0.0, 10.0]}, "srow_x = [inf, 0.0, 0.0, 10.0]"),
    ],
)
def test_nifti_non_finite_transform_field_is_refused(tmp_path, codes, stored, named):
    _refused(_nifti(tmp_path, codes=codes, **stored), "not finite numbers", named)


def test_nifti_non_finite_field_of_an_uncoded_transform_is_not_read(tmp_path):
    image = read_image(_nifti(tmp_path, codes=(0, 1), qoffset_x=np.nan))
    np.testing.assert_allclose(_position(image), _lps(AFFINE[:3, :3] @ VOXEL + AFFINE[:3, 3]))


def test_nifti_quaternion_longer_than_one_is_refused(tmp_path):
    path = _nifti(tmp_path, codes=(1, 0), quatern_b=0.9, quatern_c=0.9, quatern_d=0.1)
    _refused(path, "quatern_b, quatern_c, quatern_d = 0.9, 0.9, 0.1", "b² + c² + d² = 1.63 exceeds 1")


def test_nifti_sheared_sform_gives_way_to_the_qform_as_in_itk_or_is_refused_alone(tmp_path, caplog):
    sheared = AFFINE.copy()
    sheared[0, 1] = 1.5
    path = _nifti(tmp_path, codes=(1, 1), srow_x=sheared[0])
    with caplog.at_level(logging.WARNING, logger="mambaseg.io.nifti"):
        image = read_image(path)
    assert (
        f"{path}: the sform (sform_code 1) is not a rotation times a scale (it shears); using the qform" in caplog.text
    )
    assert_same(image, from_sitk(sitk.ReadImage(str(path)))[0])
    _refused(_nifti(tmp_path, "alone.nii", codes=(0, 1), srow_x=sheared[0]), "the sform (srow_x, srow_y, srow_z)")


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (1004, "GENMATRIX"),
        (1005, "SYMMATRIX"),
        (1006, "DISPVECT"),
        (1008, "POINTSET"),
        (1009, "TRIANGLE"),
        (1010, "QUATERNION"),
    ],
)
def test_nifti_intent_of_values_that_are_not_an_image_is_refused(tmp_path, code, name):
    data = np.zeros((*SHAPE, 1, 3), np.float32)
    _refused(_nifti(tmp_path, data=data, intent_code=code), f"intent_code = {code} (NIFTI_INTENT_{name}")


def test_nifti_vector_intent_is_read_as_channels_as_itk_writes_them(tmp_path):
    data = np.stack([VOXELS.reshape(SHAPE) * (c + 1) for c in range(3)], axis=-1)[:, :, :, None, :]  # (x, y, z, 1, c)
    channels = read_image_channels(_nifti(tmp_path, data=data, intent_code=1007))
    assert len(channels) == 3
    np.testing.assert_array_equal(channels[2].array, VOXELS.reshape(SHAPE).T * 3)
    np.testing.assert_allclose(_position(channels[2]), _lps(AFFINE[:3, :3] @ VOXEL + AFFINE[:3, 3]))


def test_nifti_fourth_axis_is_channels_and_timing_fields_move_no_voxel(tmp_path):
    data = np.stack([VOXELS.reshape(SHAPE)] * 2, axis=-1)
    plain = read_image_channels(_nifti(tmp_path, "plain.nii", data=data))
    timed = _nifti(
        tmp_path,
        "timed.nii",
        data=data,
        pixdim={4: 2.5},
        xyzt_units=2 | 8,
        toffset=3.0,
        slice_duration=0.1,
        dim_info=1 | 2 << 2 | 3 << 4,
        slice_code=1,
        slice_start=0,
        slice_end=5,
    )
    header = nib.load(timed).header
    assert header["pixdim"][4] == 2.5 and header["toffset"] == 3.0 and header.get_dim_info() == (0, 1, 2)
    channels = read_image_channels(timed)
    assert len(channels) == 2
    for ours, reference in zip(channels, plain, strict=True):
        assert_same(ours, reference, tol=0.0)
    with pytest.raises(ValueError, match="read_image_channels"):
        read_image(timed)


def test_nifti_five_axes_with_time_and_components_are_refused(tmp_path):
    _refused(_nifti(tmp_path, data=np.zeros((*SHAPE, 2, 3), np.int16)), "shape (4, 5, 6, 2, 3) is not 2-D, 3-D or 4-D")


@pytest.mark.parametrize(
    ("column_y", "z_offset", "named"),
    [
        ((0.0, 3.0, 0.0), 0.0, None),
        ((0.0, 0.0, 3.0), 0.0, "tilts its plane out of x-y (z cosine 1)"),
        ((0.0, 1.5, 1.5 * 3**0.5), 0.0, "tilts its plane out of x-y (z cosine 0.866)"),
        ((0.0, 3.0, 0.0), 7.5, "places its plane at z = 7.5 mm"),
    ],
)
def test_nifti_2d_plane_must_lie_in_xy_at_z_zero(tmp_path, column_y, z_offset, named):
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 3] = (2.0, 0.0, 0.0), column_y, (10.0, 20.0, z_offset)
    affine[:3, 2] = np.cross(affine[:3, 0], affine[:3, 1]) / 6.0
    path = _nifti(tmp_path, affine=affine, data=VOXELS[:20].reshape(4, 5))
    if named is None:
        image = read_image(path)
        np.testing.assert_allclose(_position(image, (1, 2)), [-12.0, -26.0])
        assert_same(image, from_sitk(sitk.ReadImage(str(path)))[0])
    else:
        _refused(path, "a 2-D image (dim[0] = 2) whose sform", named, "write it as a 3-D file with one slice")


# NRRD


def _nrrd(tmp_path, fields: str, name="case.nrrd", sizes=SHAPE, data=None) -> object:
    data = VOXELS if data is None else data
    header = f"NRRD0005\ntype: short\ndimension: {len(sizes)}\nsizes: {' '.join(map(str, sizes))}\n"
    path = tmp_path / name
    path.write_bytes(f"{header}endian: little\nencoding: raw\n{fields}\n".encode() + data.astype("<i2").tobytes())
    return path


DIRECTIONS = "space directions: (2,0,0) (0,3,0) (0,0,4)\nspace origin: (10,20,30)\n"
GIVEN = np.array([2 * 1 + 10, 3 * 2 + 20, 4 * 3 + 30])  # VOXEL's position in the header's coordinates


@pytest.mark.parametrize(
    ("space", "lps_signs"),
    [
        ("left-posterior-superior", (1, 1, 1)),
        ("LPS", (1, 1, 1)),
        ("right-anterior-superior", (-1, -1, 1)),
        ("RAS", (-1, -1, 1)),
        ("left-anterior-superior", (1, -1, 1)),
        ("LAS", (1, -1, 1)),
    ],
)
def test_nrrd_patient_spaces_are_turned_into_lps(tmp_path, space, lps_signs):
    image = read_image(_nrrd(tmp_path, f"space: {space}\n{DIRECTIONS}"))
    np.testing.assert_allclose(_position(image), GIVEN * lps_signs)
    assert image.array[3, 2, 1] == VOXELS.reshape(SHAPE[::-1])[3, 2, 1]


@pytest.mark.parametrize("space", ["space: scanner-xyz", "space: 3D-right-handed", "space dimension: 3"])
def test_nrrd_spaces_without_anatomy_are_taken_as_lps_coordinates(tmp_path, space):
    np.testing.assert_allclose(_position(read_image(_nrrd(tmp_path, f"{space}\n{DIRECTIONS}"))), GIVEN)


@pytest.mark.parametrize("space", ["3D-left-handed", "3D-left-handed-time"])
def test_nrrd_left_handed_space_is_refused(tmp_path, space):
    _refused(_nrrd(tmp_path, f"space: {space}\n{DIRECTIONS}"), f"NRRD field 'space' = '{space}'", "mirror")


def test_nrrd_space_directions_give_spacing_and_direction(tmp_path):
    path = _nrrd(tmp_path, "space: LPS\nspace directions: (0,2,0) (-3,0,0) (0,0,4)\nspace origin: (1,2,3)\n")
    image = read_image(path)
    np.testing.assert_allclose(
        _position(image),
        np.array([1, 2, 3]) + 1 * np.array([0, 2, 0]) + 2 * np.array([-3, 0, 0]) + 3 * np.array([0, 0, 4]),
    )
    assert image.spacing == (2.0, 3.0, 4.0)


@pytest.mark.parametrize(
    ("directions", "named"),
    [
        ("(2,0,0) (1,3,0) (0,0,4)", "not perpendicular (a shear)"),
        ("(0,0,0) (0,3,0) (0,0,4)", "zero or non-finite vector"),
        ("(2,0,0) (0,3,0)", "does not give a vector for each spatial axis"),
        ("(2,0,0) none (0,0,4)", "does not give a vector for each spatial axis"),
    ],
)
def test_nrrd_space_directions_that_are_no_rotation_times_spacing_are_refused(tmp_path, directions, named):
    _refused(_nrrd(tmp_path, f"space: LPS\nspace directions: {directions}\n"), "NRRD field 'space directions'", named)


@pytest.mark.parametrize(
    ("units", "mm"),
    [
        ('space units: "mm" "mm" "mm"', 1.0),
        ('space units: "m" "m" "m"', 1000.0),
        ('space units: "µm" "µm" "µm"', 0.001),
        ('space units: "cm" "cm" "cm"', 10.0),
        ('space units: "" "" ""', 1.0),
    ],
)
def test_nrrd_space_units_are_converted_to_mm(tmp_path, units, mm):
    image = read_image(_nrrd(tmp_path, f"space: LPS\n{DIRECTIONS}{units}\n"))
    np.testing.assert_allclose(_position(image), GIVEN * mm)
    assert image.spacing == pytest.approx(np.array([2.0, 3.0, 4.0]) * mm)


def test_nrrd_axis_units_are_converted_to_mm(tmp_path):
    image = read_image(
        _nrrd(tmp_path, 'spacings: 2 3 4\naxis mins: 10 20 30\ncenters: node node node\nunits: "m" "m" "m"\n')
    )
    np.testing.assert_allclose(_position(image), GIVEN * 1000.0)


@pytest.mark.parametrize(
    ("units", "named"),
    [('space units: "furlong" "mm" "mm"', "gives the unit 'furlong'"), ('space units: "mm" "m" "mm"', "mix units")],
)
def test_nrrd_unknown_or_mixed_units_are_refused(tmp_path, units, named):
    _refused(_nrrd(tmp_path, f"space: LPS\n{DIRECTIONS}{units}\n"), named)


def test_nrrd_unknown_origin_is_zero_and_a_non_finite_one_is_refused(tmp_path):
    unknown = "space: LPS\nspace directions: (2,0,0) (0,3,0) (0,0,4)\nspace origin: (nan,nan,nan)\n"
    assert read_image(_nrrd(tmp_path, unknown)).origin == (0.0, 0.0, 0.0)
    infinite = "space: LPS\nspace directions: (2,0,0) (0,3,0) (0,0,4)\nspace origin: (inf,0,0)\n"
    _refused(_nrrd(tmp_path, infinite, "inf.nrrd"), "NRRD field 'space origin' = '(inf,0,0)' is not finite")


@pytest.mark.parametrize("spacings", ["-2 3 4", "0 3 4", "nan 3 4", "inf 3 4"])
def test_nrrd_spacings_must_be_positive(tmp_path, spacings):
    value = spacings.split()[0]
    _refused(_nrrd(tmp_path, f"spacings: {spacings}\n"), f"NRRD field 'spacings' gives axis 0 the spacing {value}")


@pytest.mark.parametrize(
    ("fields", "origin"),
    [
        ("spacings: 2 3 4\naxis mins: 10 20 30\ncenters: cell cell cell\n", (11.0, 21.5, 32.0)),
        ("spacings: 2 3 4\naxis mins: 10 20 30\ncenterings: node node node\n", (10.0, 20.0, 30.0)),
        ("spacings: 2 3 4\naxis mins: 10 20 30\n", (11.0, 21.5, 32.0)),  # teem's default centring is cell
        ("space: LPS\n" + DIRECTIONS + "centers: cell cell cell\n", (10.0, 20.0, 30.0)),  # space origin: a centre
        ("spacings: 2 3 4\naxis mins: 10 20 30\naxis maxs: 18 35 54\ncenters: cell cell cell\n", (11.0, 21.5, 32.0)),
        ("spacings: 2 3 4\naxis mins: 10 20 30\naxis maxs: 18 35 54\n", (11.0, 21.5, 32.0)),
        ("spacings: 2 3 4\naxis mins: 10 20 30\naxis maxs: 16 32 54\ncenters: node node cell\n", (10.0, 20.0, 32.0)),
    ],
)
def test_nrrd_centerings_place_the_origin_as_itk_does(tmp_path, fields, origin):
    image = read_image(_nrrd(tmp_path, fields))
    np.testing.assert_allclose(image.origin, origin)
    assert image.spacing == (2.0, 3.0, 4.0)


@pytest.mark.parametrize(
    "fields",
    [
        "axis mins: 10 20 30\naxis maxs: 16 32 50\n",  # no spacings: ITK takes spacing 1 but places the origin by 1.5
        "spacings: 2 3 4\naxis maxs: 16 32 50\n",
        "spacings: 2 3 4\naxis mins: 10 20 30\naxis maxs: 100 32 50\n",
        "spacings: 2 3 4\naxis mins: 10 20 30\naxis maxs: 16 32 50\ncenters: cell node node\n",
    ],
)
def test_nrrd_axis_maxs_that_itk_ignores_must_agree(tmp_path, fields):
    _refused(_nrrd(tmp_path, fields), "NRRD field 'axis maxs' gives axis 0 the maximum", "which ITK ignores")


@pytest.mark.parametrize(
    ("kinds", "sizes", "directions"),
    [
        ("vector domain domain domain", (2, *SHAPE), "none (2,0,0) (0,3,0) (0,0,4)"),
        ("list domain domain domain", (2, *SHAPE), "none (2,0,0) (0,3,0) (0,0,4)"),
        ("RGB-color domain domain domain", (3, *SHAPE), "none (2,0,0) (0,3,0) (0,0,4)"),
        ("domain domain domain vector", (*SHAPE, 2), "(2,0,0) (0,3,0) (0,0,4) none"),
        ("space space space 3-vector", (*SHAPE, 3), "(2,0,0) (0,3,0) (0,0,4) none"),
    ],
)
def test_nrrd_vector_list_and_colour_axes_are_channels(tmp_path, kinds, sizes, directions):
    data = np.arange(np.prod(sizes), dtype=np.int16)
    fields = f"space: LPS\nkinds: {kinds}\nspace directions: {directions}\nspace origin: (10,20,30)\n"
    channels = read_image_channels(_nrrd(tmp_path, fields, sizes=sizes, data=data))
    assert len(channels) == (sizes[0] if kinds.split()[0] not in ("domain", "space") else sizes[-1])
    for channel in channels:
        assert channel.array.shape == SHAPE[::-1]
        np.testing.assert_allclose(_position(channel), GIVEN)


@pytest.mark.parametrize(
    ("kind", "size"),
    [
        ("covariant-vector", 3),
        ("3-gradient", 3),
        ("normal", 3),
        ("point", 3),
        ("quaternion", 4),
        ("3D-symmetric-matrix", 6),
        ("3D-matrix", 9),
        ("time", 2),
    ],
)
def test_nrrd_time_axes_and_kinds_of_geometric_values_are_refused(tmp_path, kind, size):
    sizes = (*SHAPE, size)
    fields = f"space: LPS\nkinds: domain domain domain {kind}\nspace directions: (2,0,0) (0,3,0) (0,0,4) none\n"
    data = np.zeros(np.prod(sizes), np.int16)
    _refused(
        _nrrd(tmp_path, fields, sizes=sizes, data=data), f"NRRD field 'kinds' gives axis 3 the kind '{kind.lower()}'"
    )


def test_nrrd_measurement_frame_and_thicknesses_move_no_voxel(tmp_path):
    plain = read_image(_nrrd(tmp_path, f"space: LPS\n{DIRECTIONS}", "plain.nrrd"))
    extra = "measurement frame: (-1,0,0) (0,-1,0) (0,0,1)\nthicknesses: nan nan 9\n"
    assert_same(read_image(_nrrd(tmp_path, f"space: LPS\n{DIRECTIONS}{extra}")), plain, tol=0.0)


def test_nrrd_field_names_ignore_case_and_spaces_as_teem_does(tmp_path):
    fields = (
        'Space: LPS\nSpaceDirections: (2,0,0) (0,3,0) (0,0,4)\nSPACE ORIGIN: (10,20,30)\nspace units: "m" "m" "m"\n'
    )
    np.testing.assert_allclose(_position(read_image(_nrrd(tmp_path, fields))), GIVEN * 1000.0)


def test_nrrd_geometry_field_written_as_a_key_value_pair_is_refused(tmp_path):
    fields = "space: LPS\nspace directions: (2,0,0) (0,3,0) (0,0,4)\nspace origin:=(10,20,30)\n"
    _refused(_nrrd(tmp_path, fields), "is a key/value pair ('space origin:='), which ITK ignores")


# MetaImage


def _mha(tmp_path, keys: str, name="case.mha", ndims=3, sizes=SHAPE, data=None):
    data = VOXELS if data is None else data
    header = f"ObjectType = Image\nNDims = {ndims}\nDimSize = {' '.join(map(str, sizes))}\nElementType = MET_SHORT\n"
    path = tmp_path / name
    path.write_bytes(f"{header}{keys}ElementDataFile = LOCAL\n".encode() + data.astype("<i2").tobytes())
    return path


@pytest.mark.parametrize("matrix_key", ["TransformMatrix", "Rotation", "Orientation"])
@pytest.mark.parametrize("offset_key", ["Offset", "Position", "Origin"])
def test_metaimage_matrix_lists_columns_and_aliases_are_honoured(tmp_path, matrix_key, offset_key):
    keys = f"ElementSpacing = 2 3 4\n{offset_key} = 10 20 30\n{matrix_key} = 0 1 0 -1 0 0 0 0 1\n"
    image = read_image(_mha(tmp_path, keys))
    columns = np.array([[0, 1, 0], [-1, 0, 0], [0, 0, 1]])  # the matrix as written, one column after another
    np.testing.assert_allclose(_position(image), [10, 20, 30] + (VOXEL * [2, 3, 4]) @ columns)


@pytest.mark.parametrize("matrix", ["1 0 0 0.5 1 0 0 0 1", "2 0 0 0 1 0 0 0 1"])
def test_metaimage_matrix_that_is_not_orthonormal_is_refused(tmp_path, matrix):
    _refused(
        _mha(tmp_path, f"TransformMatrix = {matrix}\n"), f"MetaImage TransformMatrix = '{matrix}' is not orthonormal"
    )


@pytest.mark.parametrize(
    ("matrix", "orientation"),
    [
        (None, "RAI"),  # ITK's letters: the side each axis runs from
        (None, "LPS"),  # MetaIO's documentation: the side each axis runs to
        ("-1 0 0 0 1 0 0 0 1", "LAI"),
        ("-1 0 0 0 1 0 0 0 1", "RPS"),
        ("0 1 0 1 0 0 0 0 1", "ARI"),
        ("0.8 -0.6 0 0.6 0.8 0 0 0 1", "RAI"),
        (None, "???"),
    ],
)
def test_metaimage_anatomical_orientation_that_fits_the_matrix_is_accepted(tmp_path, matrix, orientation):
    keys = (f"TransformMatrix = {matrix}\n" if matrix else "") + f"AnatomicalOrientation = {orientation}\n"
    assert read_image(_mha(tmp_path, keys)).array.shape == SHAPE[::-1]


@pytest.mark.parametrize(
    ("matrix", "orientation", "named"),
    [
        (None, "RAS", "contradicts no TransformMatrix"),
        (None, "LPI", "contradicts no TransformMatrix"),
        ("-1 0 0 0 1 0 0 0 1", "RAI", "contradicts TransformMatrix"),
        (None, "RRI", "is not one of R/L, A/P, S/I per axis"),
        (None, "RA", "is not one of R/L, A/P, S/I per axis"),
    ],
)
def test_metaimage_anatomical_orientation_contradicting_the_matrix_is_refused(tmp_path, matrix, orientation, named):
    keys = (f"TransformMatrix = {matrix}\n" if matrix else "") + f"AnatomicalOrientation = {orientation}\n"
    _refused(_mha(tmp_path, keys), f"MetaImage AnatomicalOrientation = '{orientation}'", named)


@pytest.mark.parametrize(
    ("keys", "spacing"),
    [
        ("ElementSpacing = 2 3 4\n", (2.0, 3.0, 4.0)),
        ("ElementSize = 2 3 4\n", (2.0, 3.0, 4.0)),  # MetaIO takes the size as spacing when none is given
        ("ElementSize = 5 5 5\nElementSpacing = 2 3 4\n", (2.0, 3.0, 4.0)),  # a voxel's extent, not its place
        ("ElementSpacing = 2 3 4\nElementSize = 0 0 0\n", (2.0, 3.0, 4.0)),
    ],
)
def test_metaimage_spacing_comes_from_element_spacing_or_else_element_size(tmp_path, keys, spacing):
    assert read_image(_mha(tmp_path, keys)).spacing == spacing


@pytest.mark.parametrize(
    ("keys", "named"),
    [
        ("ElementSpacing = -2 3 4\n", "ElementSpacing = '-2 3 4': spacing must be positive"),
        ("ElementSpacing = 0 3 4\n", "ElementSpacing = '0 3 4': spacing must be positive"),
        ("ElementSpacing = nan 3 4\n", "ElementSpacing = 'nan 3 4': spacing must be positive"),
        ("ElementSize = -2 3 4\n", "ElementSize = '-2 3 4': spacing must be positive"),
        ("ElementSpacing = 2 3\n", "ElementSpacing = '2 3' has 2 values, the image needs 3"),
        ("ElementSpacing = 2 x 4\n", "ElementSpacing = '2 x 4' is not a list of numbers"),
        ("ElementSpacing = 2,3,4\n", "ElementSpacing = '2,3,4' is not a list of numbers"),  # ITK: 2, 0, 0
        ("Offset = nan 0 0\n", "Offset = 'nan 0 0' is not finite"),
        ("TransformMatrix = 1 0 0 1\n", "TransformMatrix = '1 0 0 1' has 4 values, the image needs 9"),
        ("Offset = 1 2 3\nPosition = 4 5 6\n", "Offset = '1 2 3' and Position = '4 5 6' differ"),
        ("elementspacing = 2 3 4\n", "key 'elementspacing' is ignored by MetaIO, whose keys are case-sensitive"),
        ("offset = 1 2 3\n", "key 'offset' is ignored by MetaIO"),
    ],
)
def test_metaimage_geometry_keys_itk_would_misread_are_refused(tmp_path, keys, named):
    _refused(_mha(tmp_path, keys), f"MetaImage {named}")


def test_metaimage_center_of_rotation_moves_no_voxel(tmp_path):
    plain = read_image(_mha(tmp_path, "Offset = 1 2 3\n", "plain.mha"))
    assert_same(read_image(_mha(tmp_path, "Offset = 1 2 3\nCenterOfRotation = 50 -7 9\n")), plain, tol=0.0)


def test_metaimage_detached_header_is_checked_too(tmp_path):
    (tmp_path / "case.raw").write_bytes(VOXELS.astype("<i2").tobytes())
    header = "ObjectType = Image\nNDims = 3\nDimSize = 4 5 6\nElementType = MET_SHORT\nElementSpacing = 2 -3 4\n"
    (tmp_path / "case.mhd").write_text(header + "ElementDataFile = case.raw\n")
    _refused(tmp_path / "case.mhd", "MetaImage ElementSpacing = '2 -3 4'")


@pytest.mark.parametrize("ending", ["mha", "nrrd"])
def test_images_of_more_than_three_dimensions_are_refused(tmp_path, ending):
    sizes, data = (*SHAPE, 2), np.zeros(np.prod(SHAPE) * 2, np.int16)
    path = (
        _mha(tmp_path, "", ndims=4, sizes=sizes, data=data)
        if ending == "mha"
        else _nrrd(tmp_path, "", sizes=sizes, data=data)
    )
    _refused(path, "a 4-D image of size (4, 5, 6, 2); only 2-D and 3-D images are read")
