"""Sequence operators: the selective scan and its backends."""

from mambaseg.ops.scan_dispatch import BACKENDS, resolve_backend, selective_scan
from mambaseg.ops.scan_reference import selective_scan_reference

__all__ = ["BACKENDS", "resolve_backend", "selective_scan", "selective_scan_reference"]
