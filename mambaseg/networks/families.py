"""Imports every network family module so that each registers its networks; the planner's default network."""

from mambaseg.networks import segmamba, swin_umamba, umamba, unet, vmunet  # noqa: F401

DEFAULT_NETWORK = "umamba_bot"
"""The network ``mambaseg plan`` picks for every configuration unless told otherwise (see docs/planning.md)."""
