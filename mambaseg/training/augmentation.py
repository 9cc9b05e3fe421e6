"""Training augmentation: nnU-Net's recipe as MONAI dictionary transforms, configured from a plain dict.

Dimension letters: c channels, *s the spatial axes in array order (z, y, x in 3-D; axis 0 is the
out-of-plane axis of anisotropic data).

A sample is ``{"image": (c, *s) float, "label": (1, *s) integer}`` (numpy or torch); the pipelines return
plain tensors, the image float32 and the label int64, and never modify their input. The order and the
probabilities follow nnU-Net's ``get_training_transforms``: rotation and scaling, Gaussian noise, Gaussian
blur, multiplicative brightness, contrast, low-resolution simulation, inverted gamma, gamma, mirroring.
Multiplier ranges are sampled as nnU-Net's ``BGContrast`` does: half of the time below 1, half above.

"Dummy 2D" (strongly anisotropic 3-D patches, see ``needs_dummy_2d``) rotates only around axis 0, scales
only in-plane and simulates low resolution in-plane only, as nnU-Net's 2-D spatial transform on the
slices does. Elastic deformation is off, as in nnU-Net.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.layers import separable_filtering
from monai.networks.layers.convutils import gaussian_1d
from monai.transforms import (
    AdjustContrast,
    Affine,
    Compose,
    EnsureTyped,
    MapTransform,
    RandFlipd,
    RandGaussianNoised,
    RandomizableTransform,
    ResizeWithPadOrCropd,
    ScaleIntensityFixedMean,
)

IMAGE = "image"
LABEL = "label"
DUMMY_2D_THRESHOLD = 3.0

_GROUP_KEYS: dict[str, tuple[str, ...]] = {
    "spatial": (
        "p_rotation",
        "rotation_deg_3d",
        "rotation_deg_2d",
        "rotation_deg_2d_elongated",
        "elongated_ratio",
        "p_scaling",
        "scaling",
    ),
    "noise": ("p", "max_std"),
    "blur": ("p", "sigma", "p_per_channel"),
    "brightness": ("p", "multiplier"),
    "contrast": ("p", "factor", "preserve_range"),
    "low_resolution": ("p", "zoom", "p_per_channel"),
    "inverted_gamma": ("p", "gamma", "retain_stats"),
    "gamma": ("p", "gamma", "retain_stats"),
    "mirror": ("p",),
}
_PROBABILITY_KEYS = ("p", "p_rotation", "p_scaling")


def needs_dummy_2d(patch_size: Sequence[int], threshold: float = DUMMY_2D_THRESHOLD) -> bool:
    """nnU-Net's rule: a 3-D patch whose largest edge exceeds ``threshold`` times its axis-0 edge."""
    return len(patch_size) == 3 and max(patch_size) / patch_size[0] > threshold


def sample_multiplier(rng: np.random.RandomState, low: float, high: float) -> float:
    """Sample in ``[low, high]``, half of the time below 1 and half above when the range contains 1."""
    if low < 1 and rng.uniform() < 0.5:
        return float(rng.uniform(low, 1.0))
    return float(rng.uniform(max(low, 1.0), high))


class RandRotateScaled(RandomizableTransform, MapTransform):
    """Random rotation and isotropic scaling (nnU-Net's spatial transform without elastic deformation).

    Rotation and scaling are drawn independently; the image is resampled linearly and the label by
    nearest neighbour, both padded with zeros, onto ``spatial_size`` centred on the input's centre.
    Without rotation or scaling the sample is only centre-cropped or padded to ``spatial_size``.

    Args:
        spatial_size: the output patch size.
        p_rotation: probability of a rotation.
        max_rotation: rotation angles are uniform in ``[-max_rotation, max_rotation]`` (radians), one per
            rotation plane in 3-D.
        p_scaling: probability of a scaling.
        scaling: range of the scale factor, shared by the axes; above 1 makes structures smaller.
        in_plane: rotate around axis 0 only and leave axis 0 unscaled (dummy 2D).
    """

    def __init__(
        self,
        spatial_size: Sequence[int],
        p_rotation: float,
        max_rotation: float,
        p_scaling: float,
        scaling: tuple[float, float],
        in_plane: bool = False,
    ) -> None:
        MapTransform.__init__(self, (IMAGE, LABEL))
        RandomizableTransform.__init__(self, prob=1.0)
        self.spatial_size = tuple(int(s) for s in spatial_size)
        self.p_rotation = p_rotation
        self.max_rotation = max_rotation
        self.p_scaling = p_scaling
        self.scaling = scaling
        self.in_plane = in_plane
        self._crop = ResizeWithPadOrCropd((IMAGE, LABEL), spatial_size=self.spatial_size, mode="constant")
        self._angles: list[float] = []
        self._scales: list[float] = []

    def randomize(self, data: Any = None) -> None:
        """Draw the angles and scales; none of either when that part is not applied."""
        ndim = len(self.spatial_size)
        do_rotation = self.R.uniform() < self.p_rotation
        do_scaling = self.R.uniform() < self.p_scaling
        self._angles, self._scales = [], []
        if do_rotation:
            planes = 1 if ndim == 2 else 3
            drawn = 1 if self.in_plane else planes
            self._angles = [float(self.R.uniform(-self.max_rotation, self.max_rotation)) for _ in range(drawn)]
            self._angles += [0.0] * (planes - drawn)
        if do_scaling:
            scale = float(self.R.uniform(*self.scaling))
            self._scales = [1.0 if (self.in_plane and axis == 0) else scale for axis in range(ndim)]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        self.randomize()
        if not self._angles and not self._scales:
            return self._crop(data)
        d = dict(data)
        ndim = len(self.spatial_size)
        rotate = self._angles or [0.0] * (1 if ndim == 2 else 3)
        scale = self._scales or [1.0] * ndim
        for key in self.key_iterator(d):
            is_label = key == LABEL
            affine = Affine(
                rotate_params=rotate,
                scale_params=scale,
                spatial_size=self.spatial_size,
                mode="nearest" if is_label else "bilinear",
                padding_mode="zeros",
                image_only=True,
            )
            src = torch.as_tensor(d[key])
            out = affine(src.float())  # (c, *spatial_size)
            d[key] = out.to(src.dtype) if is_label else out
        return d


class _RandChannelwised(RandomizableTransform, MapTransform):
    """With probability ``prob``, changes each image channel with probability ``p_per_channel``.

    Subclasses draw a parameter per channel in ``sample`` and apply it in ``apply``.
    """

    def __init__(self, prob: float, p_per_channel: float = 1.0) -> None:
        MapTransform.__init__(self, IMAGE)
        RandomizableTransform.__init__(self, prob=prob)
        self.p_per_channel = p_per_channel
        self._params: list[tuple[int, Any]] = []

    def sample(self, spatial_ndim: int) -> Any:
        raise NotImplementedError

    def apply(self, channel: torch.Tensor, param: Any) -> torch.Tensor:
        raise NotImplementedError

    def randomize(self, data: Any = None) -> None:
        """Draw whether to apply, then the channels and their parameters; ``data`` is the image."""
        super().randomize(None)
        self._params = []
        if self._do_transform:
            channels, spatial_ndim = data.shape[0], data.ndim - 1
            chosen = [c for c in range(channels) if self.R.uniform() < self.p_per_channel]
            self._params = [(c, self.sample(spatial_ndim)) for c in chosen]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(d[IMAGE])
        if self._params:
            img = torch.as_tensor(d[IMAGE]).clone()  # (c, *s)
            for c, param in self._params:
                img[c : c + 1] = self.apply(img[c : c + 1], param)
            d[IMAGE] = img
        return d


class RandGaussianBlurd(_RandChannelwised):
    """Gaussian blur with a sigma drawn per channel and axis (reflect padding, kernel to 3 sigma)."""

    def __init__(self, prob: float, sigma: tuple[float, float], p_per_channel: float) -> None:
        super().__init__(prob, p_per_channel)
        self.sigma = sigma

    def sample(self, spatial_ndim: int) -> list[float]:
        return [float(self.R.uniform(*self.sigma)) for _ in range(spatial_ndim)]

    def apply(self, channel: torch.Tensor, param: list[float]) -> torch.Tensor:
        kernels = [gaussian_1d(torch.tensor(s), truncated=3.0, approx="sampled", normalize=True) for s in param]
        radius = max(k.numel() // 2 for k in kernels)
        mode = "reflect" if min(channel.shape[1:]) > radius else "replicate"
        return separable_filtering(channel[None].float(), kernels, mode=mode)[0]  # (1, *s)


class RandBrightnessd(_RandChannelwised):
    """Multiplies each channel by a factor drawn from ``multiplier``."""

    def __init__(self, prob: float, multiplier: tuple[float, float]) -> None:
        super().__init__(prob)
        self.multiplier = multiplier

    def sample(self, spatial_ndim: int) -> float:
        return sample_multiplier(self.R, *self.multiplier)

    def apply(self, channel: torch.Tensor, param: float) -> torch.Tensor:
        return channel * param


class RandContrastd(_RandChannelwised):
    """Scales each channel around its mean by a factor drawn from ``factor``, optionally clipped to its range."""

    def __init__(self, prob: float, factor: tuple[float, float], preserve_range: bool) -> None:
        super().__init__(prob)
        self.factor = factor
        self.preserve_range = preserve_range

    def sample(self, spatial_ndim: int) -> float:
        return sample_multiplier(self.R, *self.factor)

    def apply(self, channel: torch.Tensor, param: float) -> torch.Tensor:
        scale = ScaleIntensityFixedMean(factor=param - 1.0, preserve_range=self.preserve_range, fixed_mean=True)
        return scale(channel)


class RandSimulateLowResolutiond(_RandChannelwised):
    """Downsamples a channel by nearest neighbour with a zoom drawn from ``zoom`` and resizes it back linearly.

    Args:
        prob: probability for the sample.
        zoom: range of the zoom factor, shared by the axes.
        p_per_channel: probability for each channel.
        ignore_axes: spatial axes kept at full resolution (axis 0 in dummy 2D).
    """

    def __init__(
        self, prob: float, zoom: tuple[float, float], p_per_channel: float, ignore_axes: Sequence[int] = ()
    ) -> None:
        super().__init__(prob, p_per_channel)
        self.zoom = zoom
        self.ignore_axes = tuple(ignore_axes)

    def sample(self, spatial_ndim: int) -> float:
        return float(self.R.uniform(*self.zoom))

    def apply(self, channel: torch.Tensor, param: float) -> torch.Tensor:
        shape = channel.shape[1:]
        small = [n if axis in self.ignore_axes else max(1, round(n * param)) for axis, n in enumerate(shape)]
        mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(shape)]
        down = F.interpolate(channel[None].float(), size=small, mode="nearest-exact")
        return F.interpolate(down, size=tuple(shape), mode=mode, align_corners=False)[0]  # (1, *s)


class RandGammad(_RandChannelwised):
    """Gamma on each channel rescaled to [0, 1], optionally on the inverted image and keeping mean and std."""

    def __init__(self, prob: float, gamma: tuple[float, float], invert_image: bool, retain_stats: bool) -> None:
        super().__init__(prob)
        self.gamma = gamma
        self.invert_image = invert_image
        self.retain_stats = retain_stats

    def sample(self, spatial_ndim: int) -> float:
        return sample_multiplier(self.R, *self.gamma)

    def apply(self, channel: torch.Tensor, param: float) -> torch.Tensor:
        adjust = AdjustContrast(gamma=param, invert_image=self.invert_image, retain_stats=self.retain_stats)
        return adjust(channel)


def _group(config: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    """The group's settings when any of its probabilities is above 0, else None."""
    if name not in config or config[name] is None:
        return None
    group = dict(config[name])
    unknown = sorted(set(group) - set(_GROUP_KEYS[name]))
    if unknown:
        raise ValueError(f"augmentation config: unknown keys {unknown} in {name!r}; expected {_GROUP_KEYS[name]}")
    if not any(float(group.get(k, 0.0)) > 0 for k in _PROBABILITY_KEYS):
        return None
    missing = [k for k in _GROUP_KEYS[name] if k not in group]
    if missing:
        raise ValueError(f"augmentation config: {name!r} is enabled but lacks {missing}")
    return group


def _range(value: Any, name: str) -> tuple[float, float]:
    low, high = (float(v) for v in value)
    if low > high:
        raise ValueError(f"augmentation config: range {name!r} has low {low} above high {high}")
    return low, high


def _spatial_transform(group: dict[str, Any], patch_size: Sequence[int], anisotropic: bool) -> RandRotateScaled:
    if len(patch_size) == 2:
        elongated = max(patch_size) / min(patch_size) > float(group["elongated_ratio"])
        degrees = group["rotation_deg_2d_elongated"] if elongated else group["rotation_deg_2d"]
    else:
        degrees = group["rotation_deg_2d"] if anisotropic else group["rotation_deg_3d"]
    return RandRotateScaled(
        spatial_size=patch_size,
        p_rotation=float(group["p_rotation"]),
        max_rotation=math.radians(float(degrees)),
        p_scaling=float(group["p_scaling"]),
        scaling=_range(group["scaling"], "spatial.scaling"),
        in_plane=anisotropic,
    )


def _to_tensors() -> list[MapTransform]:
    return [
        EnsureTyped(keys=IMAGE, data_type="tensor", dtype=torch.float32, track_meta=False),
        EnsureTyped(keys=LABEL, data_type="tensor", dtype=torch.int64, track_meta=False),
    ]


def build_train_transforms(
    config: Mapping[str, Any],
    spatial_dims: int,
    patch_size: Sequence[int],
    mirror_axes: Sequence[int] | None,
    anisotropic: bool = False,
    seed: int | None = None,
) -> Compose:
    """The training augmentation pipeline.

    Args:
        config: groups of settings as in ``configs/augmentation/nnunet.yaml``; a group that is absent or
            whose probabilities are all 0 is off (``configs/augmentation/none.yaml`` turns off every group).
        spatial_dims: 2 or 3.
        patch_size: the patch size, which the pipeline returns whatever the input size.
        mirror_axes: spatial axes mirrored with the mirror probability each; None or empty for none.
        anisotropic: dummy 2D (see ``needs_dummy_2d``); 3-D only.
        seed: seeds every random transform, so that a seed always gives the same outputs.
    """
    if spatial_dims not in (2, 3) or len(patch_size) != spatial_dims:
        raise ValueError(f"augmentation: patch size {tuple(patch_size)} does not fit spatial_dims={spatial_dims}")
    if anisotropic and spatial_dims != 3:
        raise ValueError("augmentation: dummy 2D (anisotropic=True) needs 3-D patches")
    unknown = sorted(set(config) - set(_GROUP_KEYS))
    if unknown:
        raise ValueError(f"augmentation config: unknown groups {unknown}; expected {sorted(_GROUP_KEYS)}")
    axes = list(mirror_axes or [])
    if any(a < 0 or a >= spatial_dims for a in axes):
        raise ValueError(f"augmentation: mirror axes {axes} out of range for {spatial_dims} spatial axes")

    transforms: list[Any] = _to_tensors()
    if group := _group(config, "spatial"):
        transforms.append(_spatial_transform(group, patch_size, anisotropic))
    else:
        transforms.append(ResizeWithPadOrCropd((IMAGE, LABEL), spatial_size=patch_size, mode="constant"))
    if group := _group(config, "noise"):
        transforms.append(RandGaussianNoised(IMAGE, prob=float(group["p"]), std=float(group["max_std"])))
    if group := _group(config, "blur"):
        sigma = _range(group["sigma"], "blur.sigma")
        transforms.append(RandGaussianBlurd(float(group["p"]), sigma, float(group["p_per_channel"])))
    if group := _group(config, "brightness"):
        transforms.append(RandBrightnessd(float(group["p"]), _range(group["multiplier"], "brightness.multiplier")))
    if group := _group(config, "contrast"):
        factor = _range(group["factor"], "contrast.factor")
        transforms.append(RandContrastd(float(group["p"]), factor, bool(group["preserve_range"])))
    if group := _group(config, "low_resolution"):
        zoom = _range(group["zoom"], "low_resolution.zoom")
        ignore = (0,) if anisotropic else ()
        transforms.append(RandSimulateLowResolutiond(float(group["p"]), zoom, float(group["p_per_channel"]), ignore))
    for name, invert in (("inverted_gamma", True), ("gamma", False)):
        if group := _group(config, name):
            gamma = _range(group["gamma"], f"{name}.gamma")
            transforms.append(RandGammad(float(group["p"]), gamma, invert, bool(group["retain_stats"])))
    if axes and (group := _group(config, "mirror")):
        transforms += [RandFlipd((IMAGE, LABEL), prob=float(group["p"]), spatial_axis=a) for a in axes]
    transforms += _to_tensors()
    pipeline = Compose(transforms)
    if seed is not None:
        pipeline.set_random_state(seed=seed)
    return pipeline


def build_val_transforms() -> Compose:
    """The validation pipeline: type conversion only (image float32, label int64, plain tensors)."""
    return Compose(_to_tensors())
