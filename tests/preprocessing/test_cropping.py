import numpy as np

from mambaseg.preprocessing.cropping import OUTSIDE_LABEL, bbox_of_mask, crop_to_nonzero, nonzero_mask, paste_into


def test_bbox_covers_the_nonzero_region_of_all_channels():
    data = np.zeros((2, 10, 12, 14), dtype=np.float32)
    data[0, 2:5, 3:7, 4:6] = 1
    data[1, 4:8, 5:9, 1:3] = -2
    cropped = crop_to_nonzero(data)
    assert cropped.bbox == [[2, 8], [3, 9], [1, 6]]
    assert cropped.data.shape == (2, 6, 6, 5)
    assert np.array_equal(cropped.data, data[:, 2:8, 3:9, 1:6])


def test_holes_are_filled_and_outside_background_is_marked():
    data = np.zeros((1, 9, 9, 9), dtype=np.float32)
    data[0, 1:4, 1:4, 1:4] = 5
    data[0, 2, 2, 2] = 0
    data[0, 5:7, 5:7, 5:7] = 3
    seg = np.zeros((1, 9, 9, 9), dtype=np.uint8)
    seg[0, 2, 2, 2] = 1
    seg[0, 1, 6, 1] = 2  # foreground outside the nonzero mask keeps its label
    seg[0, 8, 8, 8] = 1  # foreground outside the box is cut away, as in nnU-Net
    assert nonzero_mask(data)[2, 2, 2]
    cropped = crop_to_nonzero(data, seg)
    assert cropped.bbox == [[1, 7]] * 3
    assert cropped.seg.dtype == np.int16
    assert cropped.seg[0, 1, 1, 1] == 1
    assert cropped.seg[0, 0, 5, 0] == 2
    assert cropped.seg[0, 0, 5, 1] == OUTSIDE_LABEL
    assert cropped.seg[0, 0, 0, 0] == 0
    assert np.array_equal(cropped.mask | (cropped.seg[0] > 0), cropped.seg[0] != OUTSIDE_LABEL)


def test_without_label_the_mask_is_encoded_in_seg():
    data = np.zeros((1, 4, 4), dtype=np.float32)
    data[0, 1:3, 1:3] = 1
    data[0, 1, 1] = 0
    cropped = crop_to_nonzero(data)
    assert cropped.bbox == [[1, 3], [1, 3]]
    assert np.array_equal(cropped.seg[0], [[-1, 0], [0, 0]])
    assert np.array_equal(cropped.mask, [[False, True], [True, True]])


def test_empty_image_keeps_its_shape():
    mask = np.zeros((3, 4, 5), dtype=bool)
    assert bbox_of_mask(mask) == [[0, 3], [0, 4], [0, 5]]


def test_paste_into_inverts_the_crop_with_a_fill_per_channel():
    data = np.arange(2 * 5 * 6, dtype=np.float32).reshape(2, 5, 6) + 1
    bbox = [[1, 4], [2, 5]]
    full = paste_into(data[:, 1:4, 2:5], bbox, (5, 6), fill=np.array([7.0, 8.0], dtype=np.float32))
    assert full.shape == (2, 5, 6)
    assert np.array_equal(full[:, 1:4, 2:5], data[:, 1:4, 2:5])
    assert (full[0, 0] == 7).all() and (full[1, :, 0] == 8).all()
    assert paste_into(data, [[0, 5], [0, 6]], (5, 6), fill=0) is data
