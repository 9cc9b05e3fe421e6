"""Per-structure measurements (``mambaseg.inference.measurements``) on a synthetic case of known volumes and
intensities, their files, and ``mambaseg evaluate --statistics [--images]``."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from mambaseg.cli.main import main
from mambaseg.inference.measurements import (
    STATISTICS_TABLE,
    MeasurementError,
    case_statistics_file,
    collect_statistics,
    measure_structures,
    read_case_statistics,
    write_case_statistics,
    write_statistics_table,
)
from mambaseg.io import Image, read_image, write_image
from mambaseg.workspace import evaluate

SHAPE = (10, 12, 14)  # (z, y, x)
SPACING = (0.5, 0.8, 2.0)  # (x, y, z) mm: a voxel is 0.8 mm³ = 0.0008 mL
VOXEL_ML = 0.5 * 0.8 * 2.0 / 1000
NAMES = {1: "liver", 2: "tumour", 3: "vessel", 4: "cyst"}  # cyst: absent
LIVER = (slice(1, 4), slice(2, 7), slice(3, 9))  # 3 * 5 * 6 = 90 voxels
TUMOUR = [(slice(6, 8), slice(1, 3), slice(1, 3)), (slice(6, 8), slice(8, 10), slice(10, 12))]  # 8 + 8 voxels, apart
VESSEL = [(8, 0, 0), (9, 1, 1)]  # two voxels touching at a corner only: one component with full connectivity
ANGLE = math.radians(30)
OBLIQUE = (math.cos(ANGLE), -math.sin(ANGLE), 0.0, math.sin(ANGLE), math.cos(ANGLE), 0.0, 0.0, 0.0, 1.0)
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def on_grid(array: np.ndarray, direction: tuple[float, ...] = OBLIQUE, source: str = "") -> Image:
    return Image(array, SPACING, (10.0, -20.0, 5.0), direction, source)


def case_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mask, a channel of 100 + 0..89 in the liver and 10 / 20 in the two tumour parts, and a constant 7."""
    mask = np.zeros(SHAPE, np.uint8)
    ramp = np.zeros(SHAPE, np.float32)
    mask[LIVER] = 1
    ramp[LIVER] = 100 + np.arange(90).reshape(3, 5, 6)
    for box, value in zip(TUMOUR, (10, 20), strict=True):
        mask[box] = 2
        ramp[box] = value
    for voxel in VESSEL:
        mask[voxel] = 3
    return mask, ramp, np.full(SHAPE, 7.0, np.float32)


def by_name(measurements: dict) -> dict[str, dict]:
    return {structure["name"]: structure for structure in measurements["structures"]}


def test_volumes_voxels_components_and_intensities_of_a_known_case():
    mask, ramp, constant = case_arrays()
    measured = measure_structures(on_grid(mask), NAMES, [on_grid(ramp, source="c0"), on_grid(constant, source="c1")])
    assert measured["voxel_volume_ml"] == pytest.approx(VOXEL_ML) and measured["channels"] == ["c0", "c1"]
    structures = by_name(measured)
    assert [s["label"] for s in measured["structures"]] == [1, 2, 3, 4]
    assert {name: (s["voxels"], s["components"]) for name, s in structures.items()} == {
        "liver": (90, 1),
        "tumour": (16, 2),
        "vessel": (2, 1),
        "cyst": (0, 0),
    }
    assert structures["liver"]["volume_ml"] == pytest.approx(90 * VOXEL_ML)  # 0.072 mL
    liver, constant_inside = structures["liver"]["intensity"]
    # 100..189: mean = median = 144.5; linear percentiles at positions 89 * 0.05 = 4.45 and 89 * 0.95 = 84.55
    assert liver == pytest.approx({"mean": 144.5, "median": 144.5, "p5": 104.45, "p95": 184.55})
    assert constant_inside == pytest.approx({"mean": 7.0, "median": 7.0, "p5": 7.0, "p95": 7.0})
    # eight 10s and eight 20s: positions 15 * 0.05 = 0.75 and 15 * 0.95 = 14.25 fall within each run
    assert structures["tumour"]["intensity"][0] == pytest.approx(
        {"mean": 15.0, "median": 15.0, "p5": 10.0, "p95": 20.0}
    )
    nothing = {"mean": None, "median": None, "p5": None, "p95": None}
    assert structures["cyst"] == {
        "name": "cyst", "label": 4, "voxels": 0, "volume_ml": 0.0, "components": 0, "intensity": [nothing, nothing]
    }  # fmt: skip


def test_the_direction_matrix_does_not_change_volumes():
    mask, ramp, _ = case_arrays()
    oblique = measure_structures(on_grid(mask, OBLIQUE), NAMES, [on_grid(ramp, OBLIQUE)])
    straight = measure_structures(on_grid(mask, IDENTITY), NAMES, [on_grid(ramp, IDENTITY)])
    assert oblique["structures"] == straight["structures"]


def test_without_images_no_intensities_and_a_float_mask_is_rounded():
    mask, _, _ = case_arrays()
    measured = measure_structures(on_grid(mask.astype(np.float32) + 0.01), NAMES)
    assert measured["channels"] == [] and all(s["intensity"] == [] for s in measured["structures"])
    assert by_name(measured)["liver"]["voxels"] == 90


def test_an_image_on_another_grid_is_refused_naming_its_file():
    mask, ramp, _ = case_arrays()
    moved = Image(ramp, (0.5, 0.8, 2.5), (10.0, -20.0, 5.0), OBLIQUE, "/data/case_0000.nii.gz")
    with pytest.raises(MeasurementError, match=r"/data/case_0000\.nii\.gz: spacing \(0\.5, 0\.8, 2\.5\) differs"):
        measure_structures(on_grid(mask, source="/masks/case.nii.gz"), NAMES, [moved])


def test_case_json_and_folder_table(tmp_path: Path):
    mask, ramp, constant = case_arrays()
    both = measure_structures(on_grid(mask), NAMES, [on_grid(ramp), on_grid(constant)])
    shifted = np.roll(mask, 1, axis=2)
    plain = measure_structures(on_grid(shifted), {1: "liver"})
    write_case_statistics(case_statistics_file(tmp_path, "b"), "b", both)
    write_case_statistics(case_statistics_file(tmp_path, "a"), "a", plain, reference=plain)
    (tmp_path / ".hidden_statistics.json").write_text("not json")
    content = json.loads((tmp_path / "b_statistics.json").read_text())
    assert content == {"schema_version": 1, "case": "b", "prediction": json.loads(json.dumps(both))}
    assert read_case_statistics(tmp_path / "a_statistics.json") == ("a", {"prediction": plain, "reference": plain})
    rows = collect_statistics(tmp_path)
    assert [case for case, _ in rows] == ["a", "b"]
    write_statistics_table(tmp_path / STATISTICS_TABLE, rows)
    with open(tmp_path / STATISTICS_TABLE, newline="") as file:
        reader = csv.DictReader(file)
        table = list(reader)
    assert reader.fieldnames == [
        "case", "mask", "structure", "label", "voxels", "volume_ml", "components",
        "ch0_mean", "ch0_median", "ch0_p5", "ch0_p95", "ch1_mean", "ch1_median", "ch1_p5", "ch1_p95",
    ]  # fmt: skip
    assert [(row["case"], row["mask"], row["structure"]) for row in table] == [
        ("a", "prediction", "liver"),
        ("a", "reference", "liver"),
        *[("b", "prediction", name) for name in ("liver", "tumour", "vessel", "cyst")],
    ]
    liver = table[2]
    assert (liver["label"], liver["voxels"], liver["components"]) == ("1", "90", "1")
    assert float(liver["volume_ml"]) == pytest.approx(0.072)
    assert [float(liver[f"ch0_{s}"]) for s in ("mean", "median", "p5", "p95")] == pytest.approx(
        [144.5, 144.5, 104.45, 184.55]
    )
    assert table[0]["ch0_mean"] == "" and table[5]["ch0_mean"] == ""  # no images; an absent structure


def test_a_broken_statistics_file_is_named(tmp_path: Path):
    (tmp_path / "x_statistics.json").write_text('{"case": "x"}')
    with pytest.raises(MeasurementError, match=r"x_statistics\.json: not a statistics file"):
        collect_statistics(tmp_path)


@pytest.fixture
def evaluation_folders(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Oblique NIfTI files: the reference, a prediction missing one tumour part, and two channel images."""
    mask, ramp, constant = case_arrays()
    predicted = mask.copy()
    predicted[TUMOUR[1]] = 0
    pred, ref, images = tmp_path / "pred", tmp_path / "ref", tmp_path / "images"
    write_image(on_grid(mask), ref / "case.nii.gz")
    write_image(on_grid(predicted), pred / "case.nii.gz")
    write_image(on_grid(ramp), images / "case_0000.nii.gz")
    write_image(on_grid(constant), images / "case_0001.nii.gz")
    assert read_image(ref / "case.nii.gz").direction == pytest.approx(OBLIQUE, abs=1e-6)
    return pred, ref, images


def test_evaluate_statistics_measures_both_masks_with_intensities(evaluation_folders, tmp_path: Path, capsys):
    pred, ref, images = evaluation_folders
    out = tmp_path / "out"
    argv = ["evaluate", str(pred), str(ref), "-o", str(out), "--workers", "1", "--statistics", "--images", str(images)]
    assert main(argv) == 0
    assert f"statistics: {out / STATISTICS_TABLE}" in capsys.readouterr().out.replace("\n", "")
    case, masks = read_case_statistics(out / "case_statistics.json")
    assert case == "case" and masks["prediction"]["mask"] == str(pred / "case.nii.gz")
    assert masks["reference"]["channels"] == [str(images / "case_0000.nii.gz"), str(images / "case_0001.nii.gz")]
    reference, prediction = by_name(masks["reference"]), by_name(masks["prediction"])
    assert list(reference) == ["label_1", "label_2", "label_3"]  # the labels found; no dataset names
    assert (reference["label_2"]["voxels"], reference["label_2"]["components"]) == (16, 2)
    assert (prediction["label_2"]["voxels"], prediction["label_2"]["components"]) == (8, 1)
    assert reference["label_1"]["volume_ml"] == pytest.approx(0.072, rel=1e-5)  # spacing read back from float32
    assert prediction["label_2"]["intensity"][0] == pytest.approx({"mean": 10, "median": 10, "p5": 10, "p95": 10})
    with open(out / STATISTICS_TABLE, newline="") as file:
        table = list(csv.DictReader(file))
    assert [(row["mask"], row["structure"]) for row in table] == [
        (mask, f"label_{label}") for mask in ("prediction", "reference") for label in (1, 2, 3)
    ]
    assert float(table[3]["ch0_p95"]) == pytest.approx(184.55) and float(table[3]["ch1_mean"]) == pytest.approx(7.0)


def test_evaluate_statistics_without_images_and_images_alone(evaluation_folders, capsys):
    pred, ref, images = evaluation_folders
    assert main(["evaluate", str(pred), str(ref), "--workers", "1", "--images", str(images)]) == 1
    assert "--images" in capsys.readouterr().out and not (pred / STATISTICS_TABLE).exists()
    with pytest.raises(MeasurementError, match=r"images .*: intensities are measured only with statistics=True"):
        evaluate(pred, ref, images=images)
    assert main(["evaluate", str(pred), str(ref), "--workers", "1", "--statistics"]) == 0
    _, masks = read_case_statistics(pred / "case_statistics.json")
    assert masks["prediction"]["channels"] == [] and (pred / STATISTICS_TABLE).is_file()


def test_evaluate_statistics_refuses_an_image_on_another_grid(evaluation_folders, capsys):
    pred, ref, images = evaluation_folders
    write_image(Image(np.zeros((10, 12, 13), np.float32), SPACING, (0.0,) * 3, OBLIQUE), images / "case_0001.nii.gz")
    assert main(["evaluate", str(pred), str(ref), "--workers", "1", "--statistics", "--images", str(images)]) == 1
    out = capsys.readouterr().out.replace("\n", "")
    assert f"{images / 'case_0001.nii.gz'}: shape (10, 12, 13) differs from (10, 12, 14)" in out
