"""The plans schema: what ``plans.json`` holds, and reading it back with a version check.

Axis order: ``transpose_forward`` permutes the array axes (z, y, x) so the coarsest-spacing axis
comes first, as nnU-Net does; every configuration's ``spacing``, ``median_shape`` and
``patch_size`` are in that transposed order, and a ``2d`` configuration works on slices along the
first transposed axis. Networks are stored by registry name and keyword arguments only.

``plans.json`` may be edited by hand, so ``plans_from_dict`` checks every field when it is read: types, ranges,
lengths against ``spatial_dims`` and the axes, the patch against the network's divisors (from the U-Net
topology keyword arguments, or the registered rule of a fixed-topology network) and minimum input size, and the
size of a preprocessed case implied by the target spacing and the fingerprint's median shape. Errors name the
file, the configuration and the field.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mambaseg.io.atomic import write_text_atomically
from mambaseg.networks.registry import network_entry
from mambaseg.networks.unet import resolve_topology
from mambaseg.planning.fingerprint import json_text

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SCHEMES = ("ct", "zscore", "rescale_0_1", "rgb_0_1", "none")
CT_PARAMS = ("clip_low", "clip_high", "mean", "std")
UNET_TOPOLOGY_KEYS = (
    "n_stages",
    "features_per_stage",
    "strides",
    "kernel_sizes",
    "n_blocks_per_stage",
    "n_conv_per_stage_decoder",
)
PLANS_FROM_KEYS = ("dataset", "file", "sha256")
CASCADE_FIELDS = ("previous_stage", "previous_stage_labels")
MAX_VOXELS_PER_CASE = 2**31
"""A target spacing giving the median case more voxels than this (8 GiB per float32 channel) is refused."""
UPSAMPLING_WARNING = 8.0
"""A target spacing giving the median case this many times its own voxels, or more, is warned about."""


class PlansError(ValueError):
    """A plans file cannot be read: it names the file and the offending value."""


@dataclass
class Normalization:
    """How one input channel is normalised: a scheme name and its parameters.

    Schemes: ``ct`` (clip to ``clip_low``/``clip_high``, then subtract ``mean`` and divide by ``std``,
    all from the dataset's foreground), ``zscore`` (per image; over the nonzero region only when
    ``use_mask``), ``rescale_0_1`` (per image to [0, 1]), ``rgb_0_1`` (divide by 255), ``none``.
    """

    scheme: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class ConfigurationPlan:
    """One configuration (``2d``, ``3d_fullres``, ``3d_lowres``): data geometry and the network to train."""

    spatial_dims: int
    spacing: list[float]
    median_shape: list[float]
    patch_size: list[int]
    batch_size: int
    network: str
    network_kwargs: dict[str, Any]
    normalization: list[Normalization]
    estimated_memory_gb: float
    next_stage: str | None = None
    previous_stage: str | None = None
    previous_stage_labels: list[int] | None = None

    @property
    def extra_input_channels(self) -> int:
        """Input channels after the image's: one per foreground label of the previous stage's mask (one-hot)."""
        return len(self.previous_stage_labels or ())


@dataclass
class Plans:
    """Everything the preprocessing, training and inference stages need to know about a dataset."""

    dataset_name: str
    channel_names: dict[str, str]
    labels: dict[str, int | list[int]]  # a list: a region (see ``regions_class_order``)
    num_classes: int
    gpu_memory_gb: float
    transpose_forward: list[int]
    transpose_backward: list[int]
    fingerprint: dict[str, Any]
    configurations: dict[str, ConfigurationPlan]
    schema_version: int = SCHEMA_VERSION
    plans_from: dict[str, str] | None = None
    """Plans derived from another dataset's (``plan --plans-from``): its ``dataset``, ``file`` and ``sha256``."""
    regions_class_order: list[int] | None = None
    """Region-based training: the label each region's channel paints in a mask; ``num_classes`` regions."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form; optional fields left out when unset, so plans read as before they existed."""
        data = asdict(self)
        for optional in ("plans_from", "regions_class_order"):
            if data[optional] is None:
                del data[optional]
        for cfg in data["configurations"].values():
            for key in CASCADE_FIELDS:
                if cfg.get(key) is None:
                    cfg.pop(key, None)
        return data

    def save(self, path: Path) -> None:
        """Write as readable JSON, atomically (``mambaseg.io.atomic``), creating the folder."""
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(path, json_text(self.to_dict(), indent=2) + "\n")


def plans_from_dict(data: dict[str, Any], source: str = "plans") -> Plans:
    """Build ``Plans`` from parsed JSON, checking the schema version first, then every field (module doc).

    Raises:
        PlansError: naming ``source``, the configuration and the field at fault.
    """
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise PlansError(
            f"{source}: schema_version {version!r} is not supported (this mambaseg reads version {SCHEMA_VERSION}); "
            "run `mambaseg plan` again to regenerate it"
        )
    try:
        configurations = {}
        for name, cfg in data["configurations"].items():
            norm = [Normalization(n["scheme"], dict(n.get("params") or {})) for n in cfg["normalization"]]
            configurations[name] = ConfigurationPlan(**{**cfg, "normalization": norm})
        fields = {k: v for k, v in data.items() if k != "configurations"}
        plans = Plans(**fields, configurations=configurations)
    except (KeyError, TypeError, AttributeError) as err:
        raise PlansError(f"{source}: not a valid plans file: {err!r}") from err
    validate_plans(plans, source)
    return plans


def _label_value(value: Any) -> bool:
    if isinstance(value, list):
        return bool(value) and all(_is_int(v) and v >= 0 for v in value)
    return _is_int(value) and value >= 0


def validate_plans(plans: Plans, source: str = "plans") -> None:
    """Check every field of ``plans`` (see the module doc); warn when a case would be very large.

    Raises:
        PlansError: naming ``source``, the configuration and the field at fault.
    """
    top = _Fields(source)
    top.check(isinstance(plans.dataset_name, str) and plans.dataset_name, "dataset_name", "a name", plans.dataset_name)
    top.check(_str_map(plans.channel_names), "channel_names", "an object of channel names", plans.channel_names)
    top.check(plans.channel_names, "channel_names", "at least one channel", plans.channel_names)
    labels_ok = isinstance(plans.labels, dict) and all(_label_value(v) for v in plans.labels.values())
    top.check(labels_ok, "labels", "an object of label values >= 0 (or lists of them: regions)", plans.labels)
    order = plans.regions_class_order
    order_ok = order is None or (
        isinstance(order, list) and len(order) == plans.num_classes and all(_is_int(v) and v > 0 for v in order)
    )
    top.check(order_ok, "regions_class_order", "null or one label > 0 per region (num_classes)", order)
    top.check(
        _is_int(plans.num_classes) and plans.num_classes >= 1, "num_classes", "an integer >= 1", plans.num_classes
    )
    top.check(_positive(plans.gpu_memory_gb), "gpu_memory_gb", "a positive number", plans.gpu_memory_gb)
    forward = plans.transpose_forward
    ok = isinstance(forward, list) and all(_is_int(a) for a in forward) and sorted(forward) in ([0, 1], [0, 1, 2])
    top.check(ok, "transpose_forward", "a permutation of [0, 1] or [0, 1, 2]", forward)
    backward = [forward.index(a) for a in range(len(forward))]
    top.check(
        plans.transpose_backward == backward,
        "transpose_backward",
        f"{backward}, the inverse of transpose_forward",
        plans.transpose_backward,
    )
    top.check(isinstance(plans.fingerprint, dict), "fingerprint", "an object", plans.fingerprint)
    top.check(
        isinstance(plans.configurations, dict) and plans.configurations,
        "configurations",
        "at least one configuration",
        plans.configurations,
    )
    derived = plans.plans_from
    derived_ok = derived is None or (_str_map(derived) and set(derived) == set(PLANS_FROM_KEYS))
    top.check(derived_ok, "plans_from", f"null or an object of strings {list(PLANS_FROM_KEYS)}", derived)
    for name, plan in plans.configurations.items():
        _validate_configuration(plans, name, plan, _Fields(f"{source}: configuration {name!r}"))


def load_plans(path: str | Path) -> Plans:
    """Read ``plans.json``.

    Raises:
        PlansError: the file is missing, not JSON, of another schema version, or lacks a field.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as err:
        raise PlansError(f"{path}: cannot read the plans: {err.strerror}") from err
    except json.JSONDecodeError as err:
        raise PlansError(f"{path}: not JSON: {err}") from err
    if not isinstance(data, dict):
        raise PlansError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return plans_from_dict(data, str(path))


class _Fields:
    """Raises ``PlansError`` naming the source and the field."""

    def __init__(self, where: str) -> None:
        self.where = where

    def check(self, ok: Any, field_name: str, wanted: str, value: Any) -> None:
        if not ok:
            self.fail(field_name, f"must be {wanted}, got {value!r}")

    def fail(self, field_name: str, problem: str) -> None:
        raise PlansError(f"{self.where}: {field_name} {problem}")


def cascade_labels(labels: dict[str, Any]) -> list[int]:
    """The labels a cascade stage takes one-hot from its previous stage's mask: every label value above 0, those
    inside a region's list included (a region-based mask holds the labels its regions are painted as), as
    nnU-Net's label manager counts foreground labels; ``ignore`` left out."""
    values = [value for key, entry in labels.items() if key != "ignore" for value in _as_list(entry)]
    return sorted({int(value) for value in values if _is_int(value) and value > 0})


def _as_list(entry: Any) -> list[Any]:
    return list(entry) if isinstance(entry, list | tuple) else [entry]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive(value: Any) -> bool:
    return _is_number(value) and value > 0


def _str_map(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def _numbers(value: Any, length: int, test: Any) -> bool:
    return isinstance(value, list) and len(value) == length and all(test(v) for v in value)


def _validate_configuration(plans: Plans, name: str, plan: ConfigurationPlan, fields: _Fields) -> None:
    n_axes = len(plans.transpose_forward)
    dims = plan.spatial_dims
    fields.check(
        _is_int(dims) and dims in (2, 3) and dims <= n_axes, "spatial_dims", f"2 or 3 (at most {n_axes})", dims
    )
    fields.check(_numbers(plan.spacing, dims, _positive), "spacing", f"{dims} finite numbers > 0", plan.spacing)
    median_ok = _numbers(plan.median_shape, dims, lambda v: _is_number(v) and v >= 0)
    fields.check(median_ok, "median_shape", f"{dims} finite numbers >= 0", plan.median_shape)
    patch_ok = _numbers(plan.patch_size, dims, lambda v: _is_int(v) and v >= 1)
    fields.check(patch_ok, "patch_size", f"{dims} integers >= 1", plan.patch_size)
    fields.check(_is_int(plan.batch_size) and plan.batch_size >= 1, "batch_size", "an integer >= 1", plan.batch_size)
    memory_ok = _is_number(plan.estimated_memory_gb) and plan.estimated_memory_gb >= 0
    fields.check(memory_ok, "estimated_memory_gb", "a number >= 0", plan.estimated_memory_gb)
    next_ok = plan.next_stage is None or isinstance(plan.next_stage, str)
    fields.check(next_ok, "next_stage", "a configuration name or null", plan.next_stage)
    _validate_previous_stage(plans, name, plan, fields)
    _validate_normalization(plan.normalization, len(plans.channel_names), fields)
    _validate_network(plan, fields)
    _check_case_size(plans, plan, fields)


def _validate_previous_stage(plans: Plans, name: str, plan: ConfigurationPlan, fields: _Fields) -> None:
    """A cascade stage names another planned configuration and the foreground labels of its one-hot input."""
    previous, labels = plan.previous_stage, plan.previous_stage_labels
    if previous is None:
        fields.check(labels is None, "previous_stage_labels", "null without a previous_stage", labels)
        return
    known = [other for other in plans.configurations if other != name]
    fields.check(previous in known, "previous_stage", f"one of the other configurations {known}", previous)
    foreground = cascade_labels(plans.labels)
    ok = isinstance(labels, list) and labels and all(_is_int(v) for v in labels) and sorted(labels) == foreground
    fields.check(ok, "previous_stage_labels", f"the foreground labels {foreground}", labels)


def _validate_normalization(normalization: list[Normalization], channels: int, fields: _Fields) -> None:
    count_ok = isinstance(normalization, list) and len(normalization) == channels
    fields.check(count_ok, "normalization", f"one entry per channel ({channels})", normalization)
    for index, norm in enumerate(normalization):
        field_name = f"normalization[{index}]"
        fields.check(norm.scheme in SCHEMES, f"{field_name}.scheme", f"one of {list(SCHEMES)}", norm.scheme)
        if norm.scheme == "ct":
            for key in CT_PARAMS:
                value = norm.params.get(key)
                fields.check(_is_number(value), f"{field_name}.params.{key}", "a finite number", value)
            fields.check(norm.params["std"] > 0, f"{field_name}.params.std", "> 0", norm.params["std"])
            low, high = norm.params["clip_low"], norm.params["clip_high"]
            fields.check(low <= high, f"{field_name}.params.clip_low", f"<= clip_high ({high})", low)
        if norm.scheme == "zscore":
            use_mask = norm.params.get("use_mask")
            fields.check(
                use_mask is None or isinstance(use_mask, bool),
                f"{field_name}.params.use_mask",
                "true, false or null",
                use_mask,
            )


def _validate_network(plan: ConfigurationPlan, fields: _Fields) -> None:
    """The network is registered, its U-Net topology consistent, and the patch a multiple of its divisors."""
    fields.check(isinstance(plan.network, str), "network", "a registered network name", plan.network)
    fields.check(isinstance(plan.network_kwargs, dict), "network_kwargs", "an object", plan.network_kwargs)
    try:
        entry = network_entry(plan.network)
    except ValueError as err:
        fields.fail("network", str(err))
    kwargs = plan.network_kwargs
    divisors = None
    if "strides" in kwargs:
        topology_kwargs = {key: kwargs[key] for key in UNET_TOPOLOGY_KEYS if key in kwargs}
        try:
            divisors = resolve_topology(plan.network, plan.spatial_dims, **topology_kwargs).divisors
        except (ValueError, TypeError) as err:
            fields.fail("network_kwargs", f"do not describe a U-Net topology: {err}")
        source = "the product of network_kwargs strides per axis"
    elif not kwargs:
        try:
            choice = entry.topology(plan.spacing, plan.patch_size)
        except ValueError as err:
            fields.fail("patch_size", f"{plan.patch_size} does not fit {plan.network}: {err}")
        divisors = choice.divisors if not choice.kwargs else None  # a fixed topology: default kwargs
        source = f"the input size divisor of {plan.network}"
    if divisors is not None and any(p % d for p, d in zip(plan.patch_size, divisors, strict=True)):
        fields.fail("patch_size", f"{plan.patch_size} is not a multiple of {list(divisors)}, {source}")
    minimum = entry.min_input_size(plan.spatial_dims)
    if any(p < m for p, m in zip(plan.patch_size, minimum, strict=True)):
        fields.fail(
            "patch_size", f"{plan.patch_size} is smaller than the minimum input {list(minimum)} of {plan.network}"
        )


def _check_case_size(plans: Plans, plan: ConfigurationPlan, fields: _Fields) -> None:
    """Refuse (or warn about) a target spacing that makes the median case huge; skipped without fingerprint medians."""
    forward = plans.transpose_forward
    shape, spacing = plans.fingerprint.get("median_shape_after_crop"), plans.fingerprint.get("median_spacing")
    if not (_numbers(shape, len(forward), _positive) and _numbers(spacing, len(forward), _positive)):
        return
    shape, spacing = [shape[a] for a in forward], [spacing[a] for a in forward]
    kept = len(forward) - plan.spatial_dims  # a 2d configuration of 3-D data keeps the first axis as it is
    voxels = math.prod(shape)
    new_voxels = math.prod(shape[:kept]) * math.prod(
        n * s / t for n, s, t in zip(shape[kept:], spacing[kept:], plan.spacing, strict=True)
    )
    gib = new_voxels * 4 * len(plans.channel_names) / 2**30
    size = f"the median case ({[round(n) for n in shape]} voxels at {spacing}) would have {new_voxels:.3g} voxels"
    if new_voxels > MAX_VOXELS_PER_CASE:
        fields.fail("spacing", f"{plan.spacing} is too fine: {size}, {gib:.3g} GiB per preprocessed case")
    if new_voxels >= UPSAMPLING_WARNING * voxels:
        logger.warning(
            "%s: spacing %s: %s (%.3g times as many), about %.3g GiB per preprocessed case",
            fields.where,
            plan.spacing,
            size,
            new_voxels / voxels,
            gib,
        )
