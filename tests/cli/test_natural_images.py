"""2-D natural images in nnU-Net's convention (one RGB ``CASE_0000.png`` per case, ``channel_names`` R, G, B) through
the CLI: check, plan, train a 2-D run, and predict masks of each picture's height and width."""

import json

import pytest

from mambaseg.cli.main import main
from mambaseg.io import read_image, read_image_channels
from tests.data.synthetic import RGB, rgb_case_arrays, write_png, write_rgb_png_dataset

TINY = [
    "trainer=cpu_short",
    "trainer.num_epochs=1",
    "trainer.iterations_per_epoch=2",
    "trainer.val_iterations=1",
    "num_workers=0",
    "validation.step=1",
]


@pytest.mark.slow
def test_rgb_png_dataset_is_checked_planned_trained_and_predicted_to_picture_sized_masks(tmp_path, capsys):
    dataset = write_rgb_png_dataset(tmp_path / "raw" / "Dataset007_Natural", n_cases=6, shape=(32, 40))
    workspace = tmp_path / "ws"
    assert main(["check", str(dataset), "--workers", "1"]) == 0
    assert "6 cases, 0 errors, 0 warnings" in " ".join(capsys.readouterr().out.split())
    assert main(["plan", str(dataset), "--workspace", str(workspace), "--workers", "1"]) == 0
    plans = json.loads((workspace / "Natural" / "plans.json").read_text())
    assert plans["channel_names"] == {str(index): name for index, name in RGB.items()}
    assert plans["configurations"]["2d"]["spatial_dims"] == 2 and len(plans["configurations"]["2d"]["patch_size"]) == 2

    train = ["train", str(dataset), "--workspace", str(workspace), "-c", "2d", "-n", "unet_resenc", "-f", "0"]
    assert main([*train, *TINY]) == 0
    run = workspace / "Natural" / "runs" / "2d__unet_resenc"
    validated = sorted((run / "fold_0" / "validation").glob("*.png"))
    assert validated
    for mask in validated:
        label = read_image(dataset / "labelsTr" / mask.name)
        assert [channel.array.shape for channel in read_image_channels(mask)] == [label.array.shape]

    for name, shape in (("a_0000", (36, 44)), ("b_0000", (30, 50))):
        write_png(tmp_path / "new" / f"{name}.png", rgb_case_arrays(len(name) + shape[0], shape)[0])
    write_png(tmp_path / "photos" / "holiday.png", rgb_case_arrays(9, (28, 33))[0])
    for folder in ("new", "photos"):
        command = ["predict", "-i", str(tmp_path / folder), "-o", str(tmp_path / f"{folder}_masks"), "-m", str(run)]
        assert main([*command, "-f", "0", "--device", "cpu", "--no-mirroring"]) == 0
    masks = {path.name: read_image(path).array.shape for path in tmp_path.glob("*_masks/*.nii.gz")}
    assert masks == {"a.nii.gz": (36, 44), "b.nii.gz": (30, 50), "holiday.nii.gz": (28, 33)}
