"""Imports every network family module so that each registers its networks."""

from mambaseg.networks import segmamba, swin_umamba, umamba, unet, vmunet  # noqa: F401
