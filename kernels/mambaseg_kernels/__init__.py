"""Compiled kernels for mambaseg: the C++ CPU selective scan and the Triton GPU selective scan.

This package never imports ``mambaseg`` and holds no autograd: launchers take float32 tensors and
return results and gradients, and ``mambaseg.ops`` wraps them.
"""
