"""Compiled kernels for mambaseg: the C++ CPU selective scan and the Triton GPU selective scan.

This package never imports ``mambaseg`` and holds no autograd: launchers take float32 tensors and
return results and gradients. Importing it registers the custom ops ``mambaseg::selective_scan`` and
``mambaseg::selective_scan_backward`` (``mambaseg_kernels.ops``), so that a ``torch.export`` program of a
mambaseg network loads and runs with only ``torch`` and this package; ``mambaseg.ops`` adds their autograd.
"""

from mambaseg_kernels import ops

__all__ = ["ops"]
