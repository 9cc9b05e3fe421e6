"""Cases of 2-D natural images in nnU-Net's convention: a folder of ``CASE_0000.png`` files, each holding every
channel, and the refusals of files that do not fit the model's channels."""

import pytest

from mambaseg.inference.inputs import InputCase, InputError, check_channels, discover_cases, load_case
from mambaseg.io import ChannelFilesError
from tests.data.synthetic import RGB, rgb_case_arrays, write_png

CHANNELS = {str(index): name for index, name in RGB.items()}


def test_a_folder_of_0000_files_only_has_a_case_per_file_holding_every_channel(tmp_path):
    for index in range(2):
        write_png(tmp_path / "photos" / f"img_{index:03d}_0000.png", rgb_case_arrays(index)[0])
    cases = discover_cases(tmp_path / "photos", n_channels=3)
    assert cases == [
        InputCase(f"img_{index:03d}", (tmp_path / "photos" / f"img_{index:03d}_0000.png",), "files")
        for index in range(2)
    ]
    for case in cases:
        check_channels(case, CHANNELS)
        images = load_case(case)
        check_channels(case, CHANNELS, images)
        assert [image.array.shape for image in images] == [(32, 40)] * 3


def test_rgb_files_that_do_not_fit_the_model_are_refused_naming_them(tmp_path):
    rgba = write_png(tmp_path / "rgba" / "img_0000.png", rgb_case_arrays(0, n_components=4)[0])
    (case,) = discover_cases(tmp_path / "rgba", n_channels=3)
    with pytest.raises(InputError, match=rf"case 'img' \({rgba}\): 4 channel\(s\), the run expects 3 \(R, G, B\)"):
        check_channels(case, CHANNELS, load_case(case))
    picture = rgb_case_arrays(1)[0]
    files = [
        write_png(tmp_path / "mixed" / f"img_{c:04d}.png", picture if c == 0 else picture[..., c]) for c in range(3)
    ]
    (case,) = discover_cases(tmp_path / "mixed", n_channels=3)
    assert case.sources == tuple(files) and case.grouped
    with pytest.raises(ChannelFilesError, match=rf"{files[0]}: holds 3 channels, but it is one of the case's 3"):
        load_case(case)
