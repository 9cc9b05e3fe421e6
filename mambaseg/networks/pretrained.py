"""Loading VMamba ImageNet classification checkpoints into networks with a VSS encoder, in 2D or 3D.

Accepted checkpoints: a path (read with ``torch.load(weights_only=True)``) or a state dict, either the
weights themselves or a dict holding them under ``model`` (the official layout), ``state_dict`` or ``encoder``
(``encoder.pt`` of ``mambaseg pretrain``, whose keys are ``VSSEncoder``'s, i.e. VMamba v0's).
Key names may be VMamba v0's (``patch_embed.proj``, ``layers.{i}.blocks.{j}.ln_1`` / ``.self_attention``,
``layers.{i}.downsample.reduction`` / ``.norm``), v0's under VMamba's later code (``patch_embed.0`` / ``.2``,
``.norm`` / ``.op``), or those of the v2 layout (``vss_version="v2"``, the ``vssm1`` releases): ``patch_embed.0`` /
``.2`` / ``.5`` / ``.7`` (conv, norm, conv, norm) become ``patch_embed.conv1`` / ``norm1`` / ``conv2`` / ``norm2``,
``.norm`` / ``.op`` become ``.ln_1`` / ``.self_attention``, ``norm2`` and ``mlp.fc1`` / ``mlp.fc2`` stay, and
``layers.{i}.downsample.1`` / ``.3`` become ``.conv`` / ``.norm``. The classifier (``head``, the final ``norm``,
v2's ``classifier``) is skipped.

A checkpoint key goes to ``model.pretrained_targets(key)`` when the network defines it (VM-UNet: the
encoder and the mirrored decoder stage), else to ``key`` or ``encoder.<key>``; prefixes listed in the
network's ``pretrained_skip`` are skipped. A v0 checkpoint may hold more blocks than the network (VM-UNet takes the
first blocks of each stage) and the rest is reported. A v2-layout checkpoint, or any checkpoint for a v2 encoder,
must fit the encoder exactly: a checkpoint key with no encoder tensor, or an encoder tensor with no checkpoint key,
is a ValueError naming the first such key and its shape (a checkpoint of another VMamba version or size), raised
before anything is loaded. Tensors are adapted when the shapes differ in one of these ways:

- per-order parameters (``x_proj_weight``, ``dt_projs_weight``, ``dt_projs_bias``, ``A_logs``, ``Ds``) of
  the 4 orders of the 2D cross scan go to the 6 orders of the 3D cross scan. The 2D axes (h, w) become
  the 3D axes 1 and 2 and the new axis 0 is the depth: a 3D order takes the 2D order with the same
  fastest axis and direction; the two depth-fastest orders take the mean of the 2D orders of their direction;
- 2D convolution kernels (``conv2d``, ``patch_embed.proj``, v2's stem and down-sampling convolutions) are inflated
  along the new axis 0 and divided by its size, so the response to inputs constant along depth is unchanged (up to
  the zero padding at the first and last slice of a 3-wide kernel);
- the input channels of the patch embedding's first convolution: the kernel summed over the checkpoint's channels,
  divided by the model's channel count and repeated, so an input with all channels equal to a grey image g
  answers as the checkpoint answers (g, g, g);
- a 1x1 convolution's weight (o, i, 1, 1) for a linear weight (o, i): VMamba's channel-first ``Linear2d`` accepts
  both forms;
- 3D patch merging (8c inputs, offsets with axis 0 fastest) from 2D (4c inputs, (h, w) offsets with h
  fastest): 3D block o_d + 2 q for the 2D block q, both depth offsets; ``norm`` weights repeat, the
  ``reduction`` weight repeats and halves, so inputs constant along depth merge as in 2D.

Any other difference is a ValueError naming the key and both shapes.

``load_fitting`` loads a whole trained network's state dict (any family) into another network: every tensor of the
same name and shape, nothing adapted, the rest reported (``FitReport``).
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from mambaseg.networks.vmamba_encoder import VSSEncoder
from mambaseg.ops.scan_orders import scan_orders

log = logging.getLogger(__name__)

_CLASSIFIER = re.compile(r"^(head|norm|classifier)\.")
_V2_BLOCK = re.compile(r"^(layers\.\d+\.blocks\.\d+)\.(norm|op)\.")
_V2_MLP = re.compile(r"^layers\.\d+\.blocks\.\d+\.mlp\.")
_STEM = re.compile(r"^patch_embed\.(\d+)\.")
_V0_STEM = {"0": "proj", "2": "norm"}  # VMamba's later code: Sequential(conv, permute, norm)
_V2_STEM = {"0": "conv1", "2": "norm1", "5": "conv2", "7": "norm2"}  # (conv, -, norm, -, gelu, conv, -, norm)
_V2_DOWNSAMPLE = re.compile(r"^(layers\.\d+\.downsample)\.([13])\.")  # (-, conv, -, norm)
_IMAGE_CONVS = ("patch_embed.proj.weight", "patch_embed.conv1.weight")
_PER_ORDER = ("x_proj_weight", "dt_projs_weight", "dt_projs_bias")
_PER_ORDER_CHANNEL = ("A_logs", "Ds")


@dataclass
class PretrainedReport:
    """What ``load_pretrained`` did; keys sorted.

    Attributes:
        loaded: model keys set from the checkpoint.
        missing: model keys left as they were.
        unexpected: checkpoint keys that match nothing in the model.
        skipped: checkpoint keys left out on purpose (the classifier, keys the network does not take).
    """

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _read_state(checkpoint: str | Path | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(checkpoint, str | Path):
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"load_pretrained: no checkpoint file at {path}")
        try:
            checkpoint = torch.load(path, weights_only=True, map_location="cpu")
        except pickle.UnpicklingError as err:
            if "weights_only" not in str(err) and "Weights only" not in str(err):
                raise ValueError(f"load_pretrained: {path} is not a PyTorch checkpoint ({err})") from err
            raise ValueError(
                f"load_pretrained: {path} holds more than tensors (weights_only=True refused it); load it yourself "
                "from a source you trust and pass its state dict"
            ) from err
        except Exception as err:  # torch.load fails on other files in many ways (KeyError, RuntimeError, EOFError)
            raise ValueError(
                f"load_pretrained: {path} is not a PyTorch checkpoint ({type(err).__name__}: {err}); give the .pth "
                "or .pt file of a classification checkpoint, or a mambaseg encoder.pt"
            ) from err
        if not isinstance(checkpoint, Mapping):
            raise ValueError(f"load_pretrained: {path} holds a {type(checkpoint).__name__}, not a state dict")
    for holder in ("model", "state_dict", "encoder"):
        if isinstance(checkpoint.get(holder), Mapping):
            checkpoint = checkpoint[holder]
            break
    state = {k.removeprefix("module."): v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise ValueError("load_pretrained: the checkpoint holds no tensors")
    return state


def _model_name(key: str, v2_stem: bool) -> str:
    """A checkpoint key under ``VSSEncoder``'s name (see the module doc); ``VSSEncoder`` names pass unchanged."""
    key = _V2_BLOCK.sub(lambda m: f"{m[1]}.{'ln_1' if m[2] == 'norm' else 'self_attention'}.", key)
    stem = _V2_STEM if v2_stem else _V0_STEM
    key = _STEM.sub(lambda m: f"patch_embed.{stem.get(m[1], m[1])}.", key)
    return _V2_DOWNSAMPLE.sub(lambda m: f"{m[1]}.{'conv' if m[2] == '1' else 'norm'}.", key)


def _cross_sources(spatial_dims: int) -> list[list[int]]:
    """For each cross-scan order in ``spatial_dims``, the 2D cross-scan orders it is taken from (see module doc)."""
    source, target = scan_orders("cross", 2), scan_orders("cross", spatial_dims)
    shift = spatial_dims - 2
    sources = []
    for order in target:
        same_way = [i for i, s in enumerate(source) if bool(s.flips) == bool(order.flips)]
        same_axis = [i for i in same_way if source[i].permutation[-1] + shift == order.permutation[-1]]
        sources.append(same_axis or same_way)
    return sources


def _map_orders(name: str, t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    k_src = len(scan_orders("cross", 2))
    per_channel = name in _PER_ORDER_CHANNEL
    if t.shape[0] % k_src or (per_channel and shape[0] % (t.shape[0] // k_src)):
        return t
    k_dst = shape[0] // (t.shape[0] // k_src) if per_channel else shape[0]
    dims = [n for n in (2, 3) if len(scan_orders("cross", n)) == k_dst]
    if not dims:
        return t
    per_order = t.reshape(k_src, -1, *t.shape[1:])  # (k, ...)
    mapped = torch.stack([per_order[src].mean(0) for src in _cross_sources(dims[0])])
    return mapped.reshape(-1, *t.shape[1:]) if per_channel else mapped.reshape(k_dst, *t.shape[1:])


def _inflate_merging(name: str, t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    blocks = shape[-1] // (t.shape[-1] // 4) if t.shape[-1] % 4 == 0 else 0
    if blocks != 8:
        return t
    if name in ("norm.weight", "norm.bias"):
        return t.reshape(4, -1).repeat_interleave(2, dim=0).reshape(-1)
    return t.reshape(t.shape[0], 4, -1).repeat_interleave(2, dim=1).reshape(t.shape[0], -1) / 2


def _adapt(key: str, t: torch.Tensor, shape: torch.Size, target: str, source: str) -> torch.Tensor:
    """Bring ``t`` (``source`` says which checkpoint key; ``key`` in ``VSSEncoder`` names) to ``shape``."""
    source_shape = tuple(t.shape)
    name = key.rsplit(".", 1)[-1]
    if len(shape) == 2 and t.dim() == 4 and t.shape[:2] == shape and t.shape[2:] == (1, 1):
        t = t.reshape(shape)  # a 1x1 convolution's weight as a linear weight
    if t.shape != shape and name in _PER_ORDER + _PER_ORDER_CHANNEL:
        t = _map_orders(name, t, shape)
    if t.dim() >= 3 and t.dim() == len(shape) - 1 and t.shape[2:] == shape[3:]:
        t = t.unsqueeze(2).repeat(1, 1, shape[2], *[1] * (t.dim() - 2)) / shape[2]  # conv kernel, one axis more
    if key in _IMAGE_CONVS and t.dim() == len(shape) and t.shape[1] != shape[1]:
        t = t.sum(1, keepdim=True).repeat(1, shape[1], *[1] * (t.dim() - 2)) / shape[1]
    if ".downsample." in key and t.shape != shape:
        t = _inflate_merging(key.split(".downsample.")[-1], t, shape)
    if t.shape != shape:
        raise ValueError(
            f"load_pretrained: {source} has shape {source_shape}, which cannot be adapted to "
            f"{target!r} of shape {tuple(shape)}"
        )
    return t


def _describe(encoder: nn.Module) -> str:
    if not isinstance(encoder, VSSEncoder):
        return type(encoder).__name__
    depths = [len(layer.blocks) for layer in encoder.layers]
    return f"vss_version {encoder.vss_version!r}, dims {encoder.dims}, depths {depths}"


def load_pretrained(model: nn.Module, checkpoint: str | Path | Mapping[str, torch.Tensor]) -> PretrainedReport:
    """Load a VMamba (v0 or v2) ImageNet checkpoint into ``model``'s VSS encoder, adapting 2D to 3D.

    Args:
        model: a network with a ``VSSEncoder`` under ``encoder`` (``swin_umamba``, ``swin_umamba_d``,
            ``vmunet``), a ``VSSEncoder`` or a ``VMambaClassifier``.
        checkpoint: a path to a ``torch.save`` file, or its loaded contents.

    Returns:
        The loaded, missing, unexpected and skipped keys.

    Raises:
        ValueError: a checkpoint tensor whose shape cannot be adapted to its target; for the v2 layout, a
            checkpoint key the encoder lacks or an encoder tensor the checkpoint lacks (nothing is loaded then).
    """
    state = _read_state(checkpoint)
    origin = f"checkpoint {checkpoint}" if isinstance(checkpoint, str | Path) else "checkpoint"
    model_state = model.state_dict()
    model_keys = set(model_state)
    v2_stem = any(k.startswith("patch_embed.5.") for k in state)
    skip = tuple(getattr(model, "pretrained_skip", ()))
    targets_of = getattr(model, "pretrained_targets", None)
    prefix = "encoder." if isinstance(getattr(model, "encoder", None), nn.Module) else ""
    encoder = model.encoder if prefix else model
    exact = getattr(encoder, "vss_version", "v0") == "v2" or any(_V2_MLP.match(k) for k in state)
    report = PretrainedReport()
    new_state: dict[str, torch.Tensor] = {}
    for raw_key, tensor in state.items():
        key = _model_name(raw_key, v2_stem)
        if _CLASSIFIER.match(key) or key.startswith(skip):
            report.skipped.append(raw_key)
            continue
        if exact and prefix + key not in model_keys:
            raise ValueError(
                f"load_pretrained: {origin} key {raw_key!r} of shape {tuple(tensor.shape)} has no counterpart in "
                f"the network's encoder ({_describe(encoder)}): the checkpoint is of another VMamba version or size"
            )
        targets = targets_of(key) if targets_of else [key if key in model_keys else f"encoder.{key}"]
        targets = [t for t in targets if t in model_keys]
        if not targets:
            report.unexpected.append(raw_key)
            continue
        for target in targets:
            new_state[target] = _adapt(key, tensor, model_state[target].shape, target, f"{origin} key {raw_key!r}")
    if exact:
        _check_complete(model_state, new_state, prefix, skip, encoder, origin)
    model.load_state_dict(new_state, strict=False)
    report.loaded = sorted(new_state)
    report.missing = sorted(model_keys - set(new_state))
    report.unexpected.sort()
    report.skipped.sort()
    log.info(
        "load_pretrained: %d tensors loaded, %d model tensors missing, %d checkpoint tensors unexpected, %d skipped",
        len(report.loaded),
        len(report.missing),
        len(report.unexpected),
        len(report.skipped),
    )
    log.debug(
        "load_pretrained: missing %s; unexpected %s; skipped %s", report.missing, report.unexpected, report.skipped
    )
    return report


def _check_complete(
    model_state: Mapping[str, torch.Tensor],
    new_state: Mapping[str, torch.Tensor],
    prefix: str,
    skip: tuple[str, ...],
    encoder: nn.Module,
    origin: str,
) -> None:
    """Raise ValueError naming the first encoder tensor (under ``prefix``, not skipped) that ``new_state`` lacks."""
    absent = [
        key
        for key in model_state
        if key.startswith(prefix)
        and key not in new_state
        and not _CLASSIFIER.match(key.removeprefix(prefix))
        and not key.removeprefix(prefix).startswith(skip)
    ]
    if absent:
        first = absent[0]
        raise ValueError(
            f"load_pretrained: the network's encoder tensor {first!r} of shape {tuple(model_state[first].shape)} "
            f"has no counterpart in the {origin} ({len(absent)} encoder tensors have none; the encoder: "
            f"{_describe(encoder)}): the checkpoint is of another VMamba version or size"
        )


@dataclass
class FitReport:
    """What ``load_fitting`` did; keys sorted.

    Attributes:
        loaded: model keys set from the checkpoint (same name, same shape).
        missing: model keys the checkpoint does not hold, left as they were.
        shape_differs: model key -> (checkpoint shape, model shape), left as they were (e.g. the output layers of
            another number of classes).
        unexpected: checkpoint keys that name nothing in the model.
    """

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    shape_differs: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)


def load_fitting(model: nn.Module, state: Mapping[str, torch.Tensor]) -> FitReport:
    """Load every tensor of ``state`` (a whole network's state dict) whose name and shape fit ``model``.

    Nothing is adapted: a tensor of another shape (the segmentation and deep-supervision heads of another number of
    classes, the first convolution of another channel count) is left as the model has it and reported.
    """
    state = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    model_state = model.state_dict()
    report = FitReport()
    fitting = {}
    for key, target in model_state.items():
        if key not in state:
            report.missing.append(key)
        elif state[key].shape != target.shape:
            report.shape_differs[key] = (tuple(state[key].shape), tuple(target.shape))
        else:
            fitting[key] = state[key]
    model.load_state_dict(fitting, strict=False)
    report.loaded = sorted(fitting)
    report.missing.sort()
    report.shape_differs = dict(sorted(report.shape_differs.items()))
    report.unexpected = sorted(set(state) - set(model_state))
    return report
