"""What a header may claim before any voxel is read: the size checks that stop resource bombs.

A header states the array's shape and voxel type; a reader would allocate that much before finding out that the
file cannot hold it. ``check_claimed_size`` compares the claim with the file first:

* an uncompressed file must hold at least the claimed bytes after its header;
* a compressed one (``.nii.gz``, and the SimpleITK formats, whose header may or may not say compressed) cannot
  expand by more than ``MAX_COMPRESSION_RATIO`` (deflate's own bound is 1032:1, reached only by constant data);
* no image may claim more than ``MAX_VOXELS`` voxels (channels included) whatever the file size.
"""

from __future__ import annotations

import math
from pathlib import Path

from mambaseg.io.errors import ImageReadError

MAX_VOXELS = 2**31
"""Largest number of voxels (all channels) an input may claim: 8 GiB as float32, above any scan we segment
(a 1024 x 1024 x 2000 CT is about 2.1e9)."""
MAX_COMPRESSION_RATIO = 1100
"""Largest ratio of claimed bytes to stored bytes accepted for compressed files (deflate cannot exceed 1032)."""


def check_claimed_size(
    path: str | Path, shape: tuple[int, ...], itemsize: int, stored_bytes: int, compressed: bool
) -> None:
    """Raise ImageReadError when a header's claimed array cannot be in the file, or is too large to read.

    Args:
        path: the file, named in the error.
        shape: the array shape the header claims (channels included).
        itemsize: bytes per value.
        stored_bytes: bytes available for the voxels: the file size less its header when uncompressed, the
            compressed size otherwise.
        compressed: whether ``stored_bytes`` are compressed.
    """
    voxels = math.prod(int(n) for n in shape)
    claimed = voxels * int(itemsize)
    what = f"its header claims {' x '.join(str(int(n)) for n in shape)} voxels ({_size(claimed)})"
    if any(int(n) < 0 for n in shape):
        raise ImageReadError(f"{path}: cannot read image: {what}: a negative size")
    if voxels > MAX_VOXELS:
        raise ImageReadError(f"{path}: cannot read image: {what}, more than the limit of {MAX_VOXELS} voxels")
    if compressed and claimed > MAX_COMPRESSION_RATIO * max(stored_bytes, 0):
        raise ImageReadError(
            f"{path}: cannot read image: {what}, but the file holds {_size(stored_bytes)}; even compressed, "
            f"no file reaches {claimed / max(stored_bytes, 1):.0f}:1 (limit {MAX_COMPRESSION_RATIO}:1): "
            "the header is wrong or the file is truncated"
        )
    if not compressed and claimed > stored_bytes:
        raise ImageReadError(
            f"{path}: cannot read image: {what}, but the file holds only {_size(max(stored_bytes, 0))} of voxels: "
            "the header is wrong or the file is truncated"
        )


def _size(n_bytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes} bytes"
