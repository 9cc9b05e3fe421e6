"""Fingerprint statistics against hand-computed values on tiny synthetic images."""

import numpy as np
import pytest

from mambaseg.planning.fingerprint import Fingerprint, aggregate, analyze_case, intensity_stats, nonzero_bbox


def test_nonzero_bbox_spans_every_channel():
    a = np.zeros((6, 7, 8))
    b = np.zeros((6, 7, 8))
    a[1, 2, 3] = 1
    b[4, 5, 6] = -2
    assert nonzero_bbox([a]) == (slice(1, 2), slice(2, 3), slice(3, 4))
    assert nonzero_bbox([a, b]) == (slice(1, 5), slice(2, 6), slice(3, 7))
    assert nonzero_bbox([np.zeros((3, 4))]) == (slice(0, 3), slice(0, 4))


def test_analyze_case_crops_and_collects_foreground():
    image = np.zeros((10, 10, 10), dtype=np.float32)
    image[2:6, 3:8, 1:5] = 7.0  # the nonzero block: 4 x 5 x 4
    label = np.zeros_like(image, dtype=np.uint8)
    label[3, 4, 2] = 1
    label[4, 4, 2] = 2
    image[4, 4, 2] = 9.0
    case, samples = analyze_case("c", [image], label, (2.0, 1.0, 0.5))
    assert case.shape_before_crop == [10, 10, 10]
    assert case.shape_after_crop == [4, 5, 4]
    assert case.spacing == [2.0, 1.0, 0.5]
    assert case.relative_size_after_crop == pytest.approx(80 / 1000)
    assert sorted(samples[0].tolist()) == [7.0, 9.0]


def test_sampling_is_bounded_and_seeded():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(20, 20, 20)) + 5
    label = np.ones(image.shape, dtype=np.uint8)
    _, first = analyze_case("case_7", [image], label, (1, 1, 1), samples_per_case=100)
    _, again = analyze_case("case_7", [image], label, (1, 1, 1), samples_per_case=100)
    assert first[0].shape == (100,)
    np.testing.assert_array_equal(first[0], again[0])


def test_aggregate_statistics_by_hand():
    label = np.ones((1, 2, 2), dtype=np.uint8)
    one = analyze_case("a", [np.array([[[1.0, 2.0], [3.0, 4.0]]])], label, (1, 1, 1))
    two = analyze_case("b", [np.array([[[5.0, 6.0], [7.0, 8.0]]])], label, (3, 1, 1))
    fingerprint = aggregate("D", {"0": "MRI"}, {"background": 0, "x": 1}, [one, two])
    stats = fingerprint.intensities["0"]
    values = np.arange(1.0, 9.0)
    assert stats.mean == pytest.approx(4.5)
    assert stats.median == pytest.approx(4.5)
    assert stats.std == pytest.approx(np.std(values))
    assert (stats.min, stats.max) == (1.0, 8.0)
    assert stats.percentile_00_5 == pytest.approx(1 + 0.005 * 7)
    assert stats.percentile_99_5 == pytest.approx(8 - 0.005 * 7)
    np.testing.assert_array_equal(fingerprint.spacings, [[1, 1, 1], [3, 1, 1]])
    assert fingerprint.num_classes == 2


def test_save_load_round_trip(tmp_path):
    label = np.ones((2, 2), dtype=np.uint8)
    result = analyze_case("a", [np.array([[1.0, 2.0], [3.0, 4.0]])], label, (0.5, 0.5))
    fingerprint = aggregate("D", {"0": "CT"}, {"background": 0, "x": 1}, [result])
    fingerprint.save(tmp_path / "fingerprint.json")
    loaded = Fingerprint.load(tmp_path / "fingerprint.json")
    assert loaded.to_dict() == fingerprint.to_dict()


def test_empty_foreground_gives_nan():
    assert np.isnan(intensity_stats(np.array([])).mean)


def test_load_rejects_other_versions(tmp_path):
    path = tmp_path / "fingerprint.json"
    path.write_text('{"version": 0}')
    with pytest.raises(ValueError, match=r"fingerprint.json: fingerprint version 0 is not the supported 1"):
        Fingerprint.load(path)
