"""The prediction pipeline, as parts: model stages, their combinations, labels, postprocessing.

Dimension letters: c image channels, f foreground labels a cascade hands on, k classes (or regions), m members
(folds) of one network's output, *case the preprocessed case's axes, *input the input image's array axes.

Every form of trained model is a configuration of these parts::

    images ──▶ ModelStage ─────────────────────────────▶ probabilities (k, *input) ──▶ labels ──▶ postprocessing
               (preprocess with its plan, [+ previous     Ensemble: the mean of its        to_labels   Pipeline
               stage's mask one-hot], windows over the    members' probabilities
               case, per-member softmax/sigmoid averaged,
               back to the input geometry)

* a run: one ``ModelStage`` holding its folds' networks;
* a ``torch.export`` program: one ``ModelStage`` whose one network gives every fold's logits side by side;
* a cascade: a ``ModelStage`` whose ``previous`` is the mask of another model (a stage or an ensemble);
* an ensemble: an ``Ensemble`` of models, each any of the above.

A ``Pipeline`` is a model with its postprocessing: it turns probabilities into a mask with ``to_labels`` (the one
place where that happens: argmax of softmax classes, or nnU-Net's region painting) and applies the steps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from mambaseg.inference.cascade import mask_on_grid, one_hot
from mambaseg.inference.postprocessing import apply_postprocessing, to_labels
from mambaseg.inference.sliding_window import case_logits
from mambaseg.io import Image
from mambaseg.preprocessing.case import PreprocessingSpec, preprocess_image_for_inference, restore_to_original


def softmax_(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the classes of logits (k, *case), in place: no second volume of k classes is allocated."""
    logits -= logits.amax(0, keepdim=True)
    logits.exp_()
    logits /= logits.sum(0, keepdim=True)
    return logits


@dataclass(frozen=True)
class WindowSettings:
    """How a stage runs its networks over a case: where, with which mirroring, overlap, batch and precision."""

    device: torch.device
    mirroring: bool = True
    step: float = 0.5
    autocast_dtype: torch.dtype | None = None  # None: float32
    compile: bool = False  # torch.compile each network (once per window batch shape, at its first case)


class ProbabilityModel(Protocol):
    """What gives a case's probabilities in its input geometry: a ``ModelStage`` or an ``Ensemble``."""

    num_classes: int
    regions_class_order: list[int] | None

    def probabilities(self, images: Sequence[Image]) -> np.ndarray: ...


PreviousMask = Callable[[Sequence[Image]], np.ndarray]
"""A cascade stage's input mask of a case (one Image per channel), in the input's array shape."""


def mask_of(model: ProbabilityModel) -> PreviousMask:
    """The labels ``model`` predicts, as a cascade stage takes them (no postprocessing)."""

    def previous(images: Sequence[Image]) -> np.ndarray:
        return to_labels(model.probabilities(images), model.regions_class_order)

    return previous


@dataclass(frozen=True)
class StagePlan:
    """What a stage takes from its plan: preprocessing, windows, classes, and the cascade's hand-off labels."""

    spec: PreprocessingSpec
    patch_size: tuple[int, ...]
    num_classes: int  # k, background included (or the number of regions)
    mirror_axes: tuple[int, ...]
    batch_size: int  # windows per forward pass
    regions_class_order: list[int] | None = None  # region-based: the label each region's voxels get
    previous_labels: tuple[int, ...] = ()  # a cascade stage: the previous stage's labels one-hot encoded


class ModelStage:
    """Networks of one plan: a case's images -> probabilities (k, *input), averaged over its members.

    Args:
        networks: in eval mode; each gives ``members_per_network · k`` channels (its members' logits side by side).
        plan: the stage's plan.
        settings: device, mirroring, step, precision, compilation.
        members_per_network: 1 for a fold's network; f for a program holding f folds.
        previous: a cascade stage's input mask (``mask_of`` another model, or masks read from files).
    """

    def __init__(
        self,
        networks: Sequence[nn.Module],
        plan: StagePlan,
        settings: WindowSettings,
        members_per_network: int = 1,
        previous: PreviousMask | None = None,
    ) -> None:
        if not networks:
            raise ValueError("a model stage needs at least one network")
        if (previous is None) != (not plan.previous_labels):
            raise ValueError("a cascade stage needs both its previous stage and the labels it hands on")
        regions = plan.regions_class_order
        if regions is not None and len(regions) != plan.num_classes:
            raise ValueError(
                f"regions_class_order {regions}: one label per region needed, the networks have "
                f"{plan.num_classes} region channels"
            )
        self.networks = [torch.compile(n, dynamic=False) for n in networks] if settings.compile else list(networks)
        self.plan = plan
        self.settings = settings
        self.members_per_network = members_per_network
        self.previous = previous
        self.num_classes = plan.num_classes
        self.regions_class_order = None if regions is None else [int(label) for label in regions]

    @torch.no_grad()
    def grid_probabilities(self, data: np.ndarray) -> np.ndarray:
        """Softmax (or region sigmoid) probabilities (k, *case) of preprocessed data (c, *case), averaged over
        the members."""
        plan, settings = self.plan, self.settings
        image = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
        mirror_axes = plan.mirror_axes if settings.mirroring else ()
        channels = plan.num_classes * self.members_per_network
        total = None
        for network in self.networks:
            logits = case_logits(
                network,
                image,
                plan.patch_size,
                channels,
                settings.step,
                mirror_axes,
                plan.batch_size,
                settings.device,
                settings.autocast_dtype,
            )  # (m·k, *case)
            for member in logits.split(plan.num_classes):  # each (k, *case)
                probs = softmax_(member) if self.regions_class_order is None else member.sigmoid_()
                total = probs if total is None else total.add_(probs)
                del probs
            del logits
        return total.div_(len(self.networks) * self.members_per_network).numpy()

    def probabilities(self, images: Sequence[Image]) -> np.ndarray:
        """Probabilities (k, *input) of one case given as one Image per channel, in the input's geometry."""
        data, properties = preprocess_image_for_inference(images, self.plan.spec)  # (c, *case)
        if self.previous is not None:
            seg = mask_on_grid(self.previous(images), properties)  # (1, *case)
            data = np.concatenate([data, one_hot(seg, self.plan.previous_labels)])  # (c + f, *case)
        probabilities = self.grid_probabilities(data)  # (k, *case)
        del data  # not needed while restoring, which makes a second volume of k classes
        if self.regions_class_order is None:
            return restore_to_original(probabilities, properties)
        # restoring fills the first channel with 1 outside the crop (softmax background); regions are 0 there
        padded = np.concatenate([np.zeros_like(probabilities[:1]), probabilities])  # (1 + k, *case)
        del probabilities
        return np.ascontiguousarray(restore_to_original(padded, properties)[1:])


class Ensemble:
    """The mean of several models' input-geometry probabilities (voxel for voxel exact whatever their plans)."""

    def __init__(self, members: Sequence[ProbabilityModel]) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        kinds = {(member.num_classes, _order(member.regions_class_order)) for member in members}
        if len(kinds) != 1:
            raise ValueError(f"ensemble members predict different classes or regions: {sorted(kinds)}")
        self.members = list(members)
        self.num_classes = members[0].num_classes
        self.regions_class_order = members[0].regions_class_order

    def probabilities(self, images: Sequence[Image]) -> np.ndarray:
        """The members' probabilities (k, *input), averaged."""
        total = None
        for member in self.members:
            probabilities = member.probabilities(images)  # (k, *input)
            total = probabilities if total is None else np.add(total, probabilities, out=total)
            del probabilities
        total /= len(self.members)
        return total


def _order(regions: Sequence[int] | None) -> tuple[int, ...]:
    return () if regions is None else tuple(regions)


@dataclass
class Prediction:
    mask: Image  # label map in the input's geometry
    probabilities: np.ndarray | None  # (k, *input array shape) when asked for


class Pipeline:
    """A model and what follows it: labels (softmax argmax or regions), then postprocessing steps.

    Args:
        model: a ``ModelStage`` or an ``Ensemble``.
        postprocessing: steps for ``apply_postprocessing``, applied to the mask in order.
    """

    def __init__(self, model: ProbabilityModel, postprocessing: Sequence[Mapping[str, Any]] = ()) -> None:
        self.model = model
        self.postprocessing = [dict(step) for step in postprocessing]

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    @property
    def regions_class_order(self) -> list[int] | None:
        return self.model.regions_class_order

    def predict(self, images: Sequence[Image], keep_probabilities: bool = False) -> Prediction:
        """The mask (and, if asked, the probabilities) of one case given as one Image per channel."""
        probabilities = self.model.probabilities(images)  # (k, *input)
        mask = apply_postprocessing(to_labels(probabilities, self.regions_class_order), self.postprocessing)
        return Prediction(images[0].with_array(mask), probabilities if keep_probabilities else None)
