"""Segmentation networks, created by name: ``create(name, spatial_dims, in_channels, num_classes, **kwargs)``."""

from mambaseg.networks.pretrained import PretrainedReport, load_pretrained
from mambaseg.networks.registry import create, list_networks, network_entry, register

__all__ = ["PretrainedReport", "create", "list_networks", "load_pretrained", "network_entry", "register"]
