"""DICOM-SEG segments: labelled with the dataset's label names, coded as a mapping file says (else SCT Tissue)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest

from mambaseg.inference.dicom_seg import DicomSegError, build_dicom_seg, load_segment_codes
from mambaseg.io import Image, read_dicom_series
from tests.io.cases import DIRECTIONS_3D, write_dicom_series

LABELS = {0: "background", 1: "liver", 2: "spleen"}
LIVER = {"category": ["SCT", "123037004", "Anatomical Structure"], "type": ["SCT", "10200004", "Liver"]}
UID = "1.2.826.0.1.3680043.8.498.55"


@pytest.fixture
def series(tmp_path) -> tuple[Path, Image]:
    values = np.arange(5 * 6 * 7, dtype=np.int16).reshape(5, 6, 7)
    image = Image(values, (0.8, 0.8, 2.0), (10.0, -5.0, 3.0), tuple(DIRECTIONS_3D["identity"].ravel()))
    folder = tmp_path / "series"
    write_dicom_series(image, folder, UID)
    return folder, read_dicom_series(folder)


def codes_file(tmp_path: Path, content: object) -> Path:
    path = tmp_path / "codes.json"
    path.write_text(json.dumps(content))
    return path


def test_segments_carry_label_names_and_the_given_codes(series, tmp_path):
    folder, image = series
    mask = np.zeros(image.array.shape, np.uint8)
    mask[1:3, 2:4, 2:5], mask[3, 0:2, 0:2] = 1, 2
    path = codes_file(tmp_path, {"liver": LIVER})
    seg = build_dicom_seg(
        image.with_array(mask), folder, UID, LABELS, "3d_fullres__unet", load_segment_codes(path, LABELS)
    )
    seg.save_as(tmp_path / "seg.dcm")
    read = pydicom.dcmread(tmp_path / "seg.dcm")
    segments = {int(s.SegmentNumber): s for s in read.SegmentSequence}
    assert {k: s.SegmentLabel for k, s in segments.items()} == {1: "liver", 2: "spleen"}
    category = segments[1].SegmentedPropertyCategoryCodeSequence[0]
    kind = segments[1].SegmentedPropertyTypeCodeSequence[0]
    assert [category.CodingSchemeDesignator, category.CodeValue, category.CodeMeaning] == LIVER["category"]
    assert [kind.CodingSchemeDesignator, kind.CodeValue, kind.CodeMeaning] == LIVER["type"]
    spleen = segments[2].SegmentedPropertyTypeCodeSequence[0]
    assert (spleen.CodeValue, spleen.CodeMeaning) == ("85756007", "Tissue")  # no entry: the default
    assert segments[1].SegmentAlgorithmName == "3d_fullres__unet"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"kidney": LIVER}, "label 'kidney' is not a label of the model (its labels: liver, spleen)"),
        ({"background": LIVER}, "label 'background' is not a label of the model"),
        ({"liver": {"type": LIVER["type"]}}, "label 'liver': needs exactly 'category' and 'type', got ['type']"),
        ({"liver": {**LIVER, "type": ["SCT", "10200004"]}}, "label 'liver': 'type' must be [scheme, value, meaning]"),
        ({"liver": {**LIVER, "category": "organ"}}, "label 'liver': 'category' must be [scheme, value, meaning]"),
        (["liver"], "expected a JSON object of label name -> codes, got list"),
    ],
)
def test_malformed_mappings_name_the_file_and_the_label(tmp_path, content, message):
    path = codes_file(tmp_path, content)
    with pytest.raises(DicomSegError, match=re.escape(f"{path}: {message}")):
        load_segment_codes(path, LABELS)


def test_unreadable_mapping_files(tmp_path):
    path = tmp_path / "codes.json"
    path.write_text("{liver")
    with pytest.raises(DicomSegError, match=re.escape(f"{path}: the segment codes are not valid JSON")):
        load_segment_codes(path, LABELS)
    with pytest.raises(DicomSegError, match=re.escape(f"{tmp_path / 'none.json'}: cannot read the segment codes")):
        load_segment_codes(tmp_path / "none.json", LABELS)
