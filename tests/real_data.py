"""Where the opt-in real-data tests find their files: the folder named by ``MAMBASEG_REAL_DATA``.

These tests read real scans, which are not part of the repository; they skip, saying what to set, where the
variable is unset or the folder lacks what they read. The folder holds:

- ``Task04_Hippocampus/``: the Medical Segmentation Decathlon's Task04 (hippocampus MRI, CC-BY-SA 4.0), in the
  Decathlon's own layout (``dataset.json``, ``imagesTr/``, ``labelsTr/``), from medicaldecathlon.com. The
  developers' copy holds 208 of its 260 training cases, and ``tests/data/test_real_data.py`` counts those.
- ``dicom/``: public DICOM samples, each in its own folder: ``mr_brain_study3/`` (a full-head T2 and a hippocampus
  crop of one patient) and ``mr_hippocampus_crops/`` (two more crops), MR series from TCIA collection data
  (CC BY); ``ct_totalsegmentator/`` (the TotalSegmentator project's example CT series and its mask, Apache-2.0);
  ``ct_liver_seg/`` (a 3-slice CT, a liver DICOM-SEG and the same mask as NRRD, from the dcmqi project's test
  data, BSD-style). The tests check these exact series (shapes, spacings, file names).

docs/contributing.md says the same for readers of the documentation.
"""

from __future__ import annotations

import os
from pathlib import Path

VARIABLE = "MAMBASEG_REAL_DATA"
WHERE_TO_GET = {
    "Task04_Hippocampus": "the Medical Segmentation Decathlon's Task04_Hippocampus, from medicaldecathlon.com",
    "dicom": "public DICOM samples (TCIA MR series, TotalSegmentator's example CT, dcmqi's liver DICOM-SEG)",
}


def real_data(name: str) -> Path | None:
    """The folder ``name`` (``Task04_Hippocampus``, ``dicom``) under ``$MAMBASEG_REAL_DATA``, or None where absent."""
    root = os.environ.get(VARIABLE)
    if not root or not (Path(root) / name).is_dir():
        return None
    return Path(root) / name


def skip_reason(name: str) -> str:
    """Why a test that reads the folder ``name`` skips: the variable to set and where to get the data."""
    root = os.environ.get(VARIABLE)
    where = f"{name}/: {WHERE_TO_GET[name]} (see docs/contributing.md)"
    if not root:
        return f"real data: set {VARIABLE} to a folder holding {where}"
    return f"real data: {VARIABLE}={root} has no {where}"
