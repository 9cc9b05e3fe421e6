"""Test-session setup shared by every test module."""

import os

import torch

# Triton kernels are tested on the CPU through the interpreter; it must be set before triton is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
