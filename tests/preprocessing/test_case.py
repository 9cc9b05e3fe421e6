import numpy as np
import pytest
from scipy import ndimage

from mambaseg.io import Image
from mambaseg.preprocessing.case import (
    CaseProperties,
    PreprocessingSpec,
    class_locations,
    preprocess_case,
    preprocess_image_for_inference,
    restore_to_original,
)
from mambaseg.preprocessing.normalization import ChannelNormalization

SPACING_XYZ = (0.8, 0.7, 3.5)  # thick slices: z is the low-resolution axis
ORIGIN = (10.0, -20.0, 5.0)
DIRECTION = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
SPEC = PreprocessingSpec((1.75, 1.0, 1.0), (ChannelNormalization("zscore"), ChannelNormalization("none")))


def _case() -> tuple[list[Image], Image]:
    rng = np.random.default_rng(1)
    shape = (12, 40, 36)
    body = np.zeros(shape, dtype=np.float32)
    body[2:11, 5:33, 4:30] = 100 + 10 * rng.random((9, 28, 26))
    second = (body > 0) * 3.0
    label = np.zeros(shape, dtype=np.uint8)
    label[4:8, 10:20, 8:16] = 1
    label[6:9, 22:30, 18:26] = 2
    images = [Image(a, SPACING_XYZ, ORIGIN, DIRECTION, source=f"c{i}") for i, a in enumerate((body, second))]
    return images, Image(label, SPACING_XYZ, ORIGIN, DIRECTION, source="label")


def test_preprocess_records_every_step():
    images, label = _case()
    data, seg, properties = preprocess_case(images, label, SPEC)
    assert properties.shape_before_crop == (12, 40, 36)
    assert properties.bbox == [[2, 11], [5, 33], [4, 30]]
    assert properties.shape_after_crop == (9, 28, 26)
    assert properties.target_spacing == (1.75, 1.0, 1.0)
    assert properties.shape_after_resampling == (18, 20, 21) == data.shape[1:] == seg.shape[1:]
    assert data.dtype == np.float32 and seg.dtype == np.int16
    assert abs(float(data[0].mean())) < 0.05 and np.allclose(data[1], 3.0)
    assert set(np.unique(seg)) == {0, 1, 2}
    assert CaseProperties.from_dict(properties.to_dict()) == properties


def test_inference_runs_the_same_path():
    images, label = _case()
    data, _, properties = preprocess_case(images, label, SPEC)
    inference_data, inference_properties = preprocess_image_for_inference(images, SPEC)
    assert np.array_equal(data, inference_data)
    assert inference_properties == properties


def test_restore_inverts_crop_and_resampling():
    images, label = _case()
    _, seg, properties = preprocess_case(images, label, SPEC)
    restored = restore_to_original(seg[0], properties)
    assert restored.shape == label.array.shape
    for value in (1, 2):
        before = ndimage.center_of_mass(label.array == value)
        after = ndimage.center_of_mass(restored == value)
        assert np.allclose(before, after, atol=1.0)
        assert (restored == value).sum() == pytest.approx((label.array == value).sum(), rel=0.2)
    image = properties.image_like(restored)
    assert image.same_geometry(label.with_array(restored))


def test_restore_probabilities_fills_background_outside_the_box():
    images, label = _case()
    _, seg, properties = preprocess_case(images, label, SPEC)
    one_hot = np.stack([seg[0] <= 0, seg[0] == 1, seg[0] == 2]).astype(np.float32)
    restored = restore_to_original(one_hot, properties)
    assert restored.shape == (3, 12, 40, 36)
    assert np.allclose(restored.sum(axis=0), 1.0, atol=1e-5)
    assert (restored[0, :2] == 1).all() and (restored[1:, :, :5] == 0).all()
    mask = restored.argmax(axis=0)
    assert np.mean(mask == label.array) > 0.97


def test_blob_keeps_its_physical_place_after_preprocessing():
    images, label = _case()
    _, seg, properties = preprocess_case(images, label, SPEC)
    start = np.array([low for low, _ in properties.bbox])
    scale = np.divide(properties.shape_after_crop, properties.shape_after_resampling)
    for value in (1, 2):
        preprocessed = (np.array(ndimage.center_of_mass(seg[0] == value)) + 0.5) * scale - 0.5 + start
        original = np.array(ndimage.center_of_mass(label.array == value))
        assert np.allclose(preprocessed, original, atol=1.0)


def test_channels_and_label_must_share_a_shape():
    images, label = _case()
    bad = Image(np.zeros((3, 3, 3)), SPACING_XYZ, ORIGIN, DIRECTION, source="bad.nii.gz")
    with pytest.raises(ValueError, match="bad.nii.gz: shape"):
        preprocess_case([images[0], bad], label, SPEC)
    with pytest.raises(ValueError, match="bad.nii.gz: shape"):
        preprocess_case(images, bad, SPEC)


def test_two_dimensional_target_spacing_keeps_the_first_axis():
    assert SPEC.spacing_for((3.5, 0.7, 0.8)) == (1.75, 1.0, 1.0)
    assert PreprocessingSpec((1.0, 1.0), ()).spacing_for((3.5, 0.7, 0.8)) == (3.5, 1.0, 1.0)


def test_class_locations_point_at_label_voxels_and_are_seeded():
    seg = np.zeros((1, 30, 30, 30), dtype=np.int16)
    seg[0, :20] = 1
    seg[0, 25, 25, 25] = 2
    found = class_locations(seg, [1, 2, 3], max_samples=100)
    assert found[1].shape == (180, 3)  # 1% of 18,000 voxels beats 100
    assert (seg[0][tuple(found[1].T)] == 1).all()
    assert found[2].tolist() == [[25, 25, 25]]
    assert found[3].shape == (0, 3)
    assert np.array_equal(class_locations(seg, [1], max_samples=100)[1], found[1])


def test_transposed_axes_are_undone_on_restore():
    images, label = _case()
    plain_data, plain_seg, _ = preprocess_case(images, label, SPEC)
    spec = PreprocessingSpec((1.0, 1.75, 1.0), SPEC.normalization, transpose_forward=(1, 0, 2))
    data, seg, properties = preprocess_case(images, label, spec)
    assert properties.shape_before_crop == (40, 12, 36) and properties.original_shape == (12, 40, 36)
    assert np.allclose(data, plain_data.transpose(0, 2, 1, 3), atol=1e-4)
    assert np.array_equal(seg, plain_seg.transpose(0, 2, 1, 3))
    restored = restore_to_original(seg[0], properties)
    assert restored.shape == (12, 40, 36) and restored.flags.c_contiguous
    assert np.array_equal(restored, restore_to_original(plain_seg[0], preprocess_case(images, label, SPEC)[2]))
    with pytest.raises(ValueError, match="not a permutation"):
        preprocess_case(images, label, PreprocessingSpec((1.0, 1.0, 1.0), SPEC.normalization, (0, 0, 1)))
