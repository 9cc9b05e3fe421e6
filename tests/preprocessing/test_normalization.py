import numpy as np
import pytest

from mambaseg.preprocessing.normalization import ChannelNormalization, normalize, normalize_channel


def test_ct_clips_then_standardises_with_dataset_numbers():
    image = np.array([[-2000.0, 0.0], [100.0, 3000.0]])
    spec = ChannelNormalization("ct", clip_low=-100.0, clip_high=200.0, mean=50.0, std=25.0)
    out = normalize_channel(image, spec)
    assert out.dtype == np.float32
    assert np.allclose(out, [[(-100 - 50) / 25, (0 - 50) / 25], [(100 - 50) / 25, (200 - 50) / 25]])
    assert image[0, 0] == -2000.0  # the input is not modified


def test_zscore_uses_the_whole_image():
    image = np.array([1.0, 2.0, 3.0, 4.0])
    out = normalize_channel(image, ChannelNormalization("zscore", use_mask=False))
    std = np.sqrt(((image - 2.5) ** 2).mean())
    assert np.allclose(out, (image - 2.5) / std)


def test_zscore_with_the_mask_changes_only_masked_voxels():
    image = np.array([0.0, 0.0, 2.0, 4.0])
    mask = np.array([False, False, True, True])
    out = normalize_channel(image, ChannelNormalization("zscore", use_mask=True), mask)
    assert np.allclose(out, [0.0, 0.0, -1.0, 1.0])


def test_zscore_decides_the_mask_from_the_crop_ratio():
    image = np.array([0.0, 0.0, 2.0, 4.0])
    mask = np.array([False, False, True, True])
    spec = ChannelNormalization("zscore")
    assert np.allclose(normalize_channel(image, spec, mask, crop_ratio=0.5), [0.0, 0.0, -1.0, 1.0])
    assert np.isclose(normalize_channel(image, spec, mask, crop_ratio=0.9).mean(), 0.0)


def test_rescale_and_rgb():
    assert np.allclose(normalize_channel(np.array([2.0, 4.0, 6.0]), ChannelNormalization("rescale_0_1")), [0, 0.5, 1])
    assert np.allclose(normalize_channel(np.array([0, 51, 255]), ChannelNormalization("rgb_0_1")), [0, 0.2, 1])
    with pytest.raises(ValueError, match="0..255, found 0..300"):
        normalize_channel(np.array([0, 300]), ChannelNormalization("rgb_0_1"))


def test_none_only_casts_and_channels_follow_their_own_spec():
    data = np.stack([np.full((2, 2), 3.0), np.array([[1.0, 3.0], [1.0, 3.0]])])
    specs = [ChannelNormalization("none"), ChannelNormalization("zscore", use_mask=False)]
    out = normalize(data, specs)
    assert np.array_equal(out[0], data[0])
    assert np.allclose(out[1], [[-1, 1], [-1, 1]])
    with pytest.raises(ValueError, match="2 channels but 1"):
        normalize(data, specs[:1])


def test_specs_read_the_plans_form_and_round_trip():
    params = {"clip_low": -3, "clip_high": 4, "mean": 1, "std": 2}
    spec = ChannelNormalization.from_dict({"scheme": "ct", "params": params})
    assert (spec.clip_low, spec.clip_high, spec.mean, spec.std) == (-3, 4, 1, 2)
    for each in (spec, ChannelNormalization("zscore", use_mask=True), ChannelNormalization("none")):
        assert ChannelNormalization.from_dict(each.to_dict()) == each
    with pytest.raises(ValueError, match=r"plans.json: ct normalisation needs numbers for \['clip_high', 'std'\]"):
        ChannelNormalization.from_dict({"scheme": "ct", "params": {"clip_low": 0, "mean": 0}}, "plans.json")
    with pytest.raises(ValueError, match="'minmax' is not one of"):
        ChannelNormalization.from_dict({"scheme": "minmax"})
