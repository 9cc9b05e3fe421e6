"""Plain PyTorch selective scan: the ground truth every other backend is tested against.

It lives in the kernels package (``mambaseg_kernels.reference``), where the custom op falls back to it when the
compiled CPU kernel cannot be built; this module keeps its name in ``mambaseg.ops``.
"""

from mambaseg_kernels.reference import selective_scan_reference

__all__ = ["selective_scan_reference"]
