"""Intensity normalisation per channel, by the scheme the plans name.

Schemes (``mambaseg.planning.plans.Normalization`` holds the name and its parameters):
    ``ct``           clip to the dataset's foreground intensity percentiles (``clip_low``, ``clip_high``: the
                     0.5 and 99.5 percentiles), then subtract the dataset's foreground ``mean`` and divide by
                     its ``std``; the same numbers for every image, from the fingerprint.
    ``zscore``       subtract this image's mean and divide by its standard deviation. With ``use_mask``, the
                     statistics come from the nonzero mask and only voxels inside it change (the rest stay 0),
                     as nnU-Net does for images such as skull-stripped brains.
    ``rescale_0_1``  shift and scale this image to [0, 1].
    ``rgb_0_1``      divide by 255 (8-bit colour channels).
    ``none``         cast to float32 only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

SCHEMES = ("ct", "zscore", "rescale_0_1", "rgb_0_1", "none")
MASK_SIZE_RATIO = 0.75
"""``zscore`` without an explicit ``use_mask`` uses the mask when cropping kept less than this fraction of voxels."""
_EPS = 1e-8
_CT_PARAMS = ("clip_low", "clip_high", "mean", "std")


@dataclass(frozen=True)
class ChannelNormalization:
    """How one channel is normalised.

    Attributes:
        scheme: One of ``SCHEMES``.
        use_mask: For ``zscore``: statistics from the nonzero mask only; None decides per image from how
            much cropping removed (``MASK_SIZE_RATIO``).
        clip_low: For ``ct``: the lower clipping bound.
        clip_high: For ``ct``: the upper clipping bound.
        mean: For ``ct``: the foreground mean.
        std: For ``ct``: the foreground standard deviation.
    """

    scheme: str
    use_mask: bool | None = None
    clip_low: float = -np.inf
    clip_high: float = np.inf
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"normalisation scheme {self.scheme!r} is not one of {SCHEMES}")
        if not self.clip_low <= self.clip_high:
            raise ValueError(
                f"{self.scheme} normalisation: clip_low {self.clip_low} is above clip_high {self.clip_high}"
            )

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any], source: str = "plans") -> ChannelNormalization:
        """Reads the plans' form, ``{"scheme": "ct", "params": {"clip_low": ..., "mean": ...}}``.

        Args:
            spec: The scheme and its parameters.
            source: The file it came from, named in errors.
        """
        scheme = spec.get("scheme")
        params = spec.get("params") or {}
        if not isinstance(scheme, str) or not isinstance(params, Mapping):
            raise ValueError(f"{source}: normalisation needs a 'scheme' name and a 'params' object, got {dict(spec)!r}")
        if scheme == "zscore":
            use_mask = params.get("use_mask")
            return cls("zscore", use_mask=None if use_mask is None else bool(use_mask))
        if scheme != "ct":
            return cls(scheme)
        missing = [key for key in _CT_PARAMS if not isinstance(params.get(key), (int, float))]
        if missing:
            raise ValueError(f"{source}: ct normalisation needs numbers for {missing}, got params {dict(params)!r}")
        return cls("ct", **{key: float(params[key]) for key in _CT_PARAMS})

    def to_dict(self) -> dict[str, Any]:
        """The inverse of ``from_dict``."""
        if self.scheme == "ct":
            return {"scheme": "ct", "params": {key: getattr(self, key) for key in _CT_PARAMS}}
        if self.scheme == "zscore":
            return {"scheme": "zscore", "params": {"use_mask": self.use_mask}}
        return {"scheme": self.scheme, "params": {}}


def normalize_channel(
    image: np.ndarray, spec: ChannelNormalization, mask: np.ndarray | None = None, crop_ratio: float = 1.0
) -> np.ndarray:
    """Normalises one channel.

    Args:
        image: ``(z, y, x)`` voxels; not modified.
        spec: The scheme and its numbers.
        mask: The nonzero mask, for ``zscore`` with the mask.
        crop_ratio: Voxels after cropping over voxels before, for ``zscore`` with ``use_mask`` None.

    Returns:
        A float32 array of the same shape.
    """
    out = np.array(image, dtype=np.float32)
    if spec.scheme == "ct":
        np.clip(out, spec.clip_low, spec.clip_high, out=out)
        out -= spec.mean
        out /= max(spec.std, _EPS)
    elif spec.scheme == "zscore":
        use_mask = spec.use_mask if spec.use_mask is not None else crop_ratio < MASK_SIZE_RATIO
        if use_mask and mask is not None:  # statistics in float64: float32 sums overflow on huge values
            values = out[mask]
            mean, std = values.mean(dtype=np.float64), values.std(dtype=np.float64)
            out[mask] = ((values - mean) / max(float(std), _EPS)).astype(np.float32)
        else:
            mean, std = out.mean(dtype=np.float64), out.std(dtype=np.float64)
            out -= np.float32(mean)
            out /= np.float32(max(float(std), _EPS))
    elif spec.scheme == "rescale_0_1":
        out -= out.min()
        out /= max(float(out.max()), _EPS)
    elif spec.scheme == "rgb_0_1":
        if out.size and (out.min() < 0 or out.max() > 255):
            raise ValueError(f"rgb_0_1 normalisation needs values in 0..255, found {out.min():g}..{out.max():g}")
        out /= 255
    return out


def normalize(
    data: np.ndarray,
    specs: Sequence[ChannelNormalization],
    mask: np.ndarray | None = None,
    crop_ratio: float = 1.0,
) -> np.ndarray:
    """Normalises each channel of ``data`` ``(c, z, y, x)`` by its own spec; returns float32."""
    if len(specs) != data.shape[0]:
        raise ValueError(f"{data.shape[0]} channels but {len(specs)} normalisation specs")
    channels = zip(data, specs, strict=True)
    return np.stack([normalize_channel(channel, spec, mask, crop_ratio) for channel, spec in channels])
