"""The plans schema: what ``plans.json`` holds, and reading it back with a version check.

Axis order: ``transpose_forward`` permutes the array axes (z, y, x) so the coarsest-spacing axis
comes first, as nnU-Net does; every configuration's ``spacing``, ``median_shape`` and
``patch_size`` are in that transposed order, and a ``2d`` configuration works on slices along the
first transposed axis. Networks are stored by registry name and keyword arguments only.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mambaseg.io.atomic import write_text_atomically

SCHEMA_VERSION = 1


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


@dataclass
class Plans:
    """Everything the preprocessing, training and inference stages need to know about a dataset."""

    dataset_name: str
    channel_names: dict[str, str]
    labels: dict[str, int]
    num_classes: int
    gpu_memory_gb: float
    transpose_forward: list[int]
    transpose_backward: list[int]
    fingerprint: dict[str, Any]
    configurations: dict[str, ConfigurationPlan]
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: Path) -> None:
        """Write as readable JSON, atomically (``mambaseg.io.atomic``), creating the folder."""
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(path, json.dumps(self.to_dict(), indent=2) + "\n")


def plans_from_dict(data: dict[str, Any], source: str = "plans") -> Plans:
    """Build ``Plans`` from parsed JSON, checking the schema version first."""
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise PlansError(
            f"{source}: schema_version {version!r} is not supported (this mambaseg reads version {SCHEMA_VERSION}); "
            "run `mambaseg plan` again to regenerate it"
        )
    try:
        configurations = {}
        for name, cfg in data["configurations"].items():
            norm = [Normalization(n["scheme"], dict(n.get("params", {}))) for n in cfg["normalization"]]
            configurations[name] = ConfigurationPlan(**{**cfg, "normalization": norm})
        fields = {k: v for k, v in data.items() if k != "configurations"}
        return Plans(**fields, configurations=configurations)
    except (KeyError, TypeError) as err:
        raise PlansError(f"{source}: not a valid plans file: {err}") from err


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
