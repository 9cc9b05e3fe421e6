"""Predicting whole cases: preprocess as in training, sliding window, average over models, back to the input.

Dimension letters: c channels, k classes, *case the preprocessed case's axes.

The same preprocessing functions as training bring the input into the plan's spacing; every model
(one per fold) predicts logits by sliding window, softmax probabilities are averaged over models,
resampled back to the input's spacing, pasted into the uncropped shape and transposed back, then
the argmax is the mask, with exactly the input's geometry.

Speed: the networks may run under autocast in a reduced precision (``resolve_precision``: bfloat16 on CPUs
that compute it natively, float16 or bfloat16 on CUDA) and may be compiled with ``torch.compile``; the
logits, their sums and the probabilities stay float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mambaseg.inference.postprocessing import probabilities_to_mask
from mambaseg.inference.sliding_window import sliding_window_predict
from mambaseg.io import Image
from mambaseg.nn.precision import native_autocast_dtype
from mambaseg.preprocessing.case import PreprocessingSpec, preprocess_image_for_inference, restore_to_original

PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}  # name -> autocast dtype
PRECISION_CHOICES = ("auto", *PRECISIONS)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None: float32); refuses one the device lacks natively.

    ``auto`` is the device's native reduced precision (``native_autocast_dtype``: bfloat16 on CPUs with
    AVX512_BF16 or AMX, float16 on CUDA) and float32 elsewhere.
    """
    if precision == "auto":
        return native_autocast_dtype(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision}: choose one of {', '.join(PRECISION_CHOICES)}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return None
    if device.type == "cuda":
        if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            raise ValueError(f"precision {precision}: {device} has no bfloat16; use float16 or float32")
        return dtype
    if device.type == "cpu" and dtype == torch.bfloat16 and native_autocast_dtype(device) == torch.bfloat16:
        return dtype
    reason = (
        "this CPU has no native bfloat16 (AVX512_BF16 or AMX-BF16): emulated, it is slower than float32"
        if device.type == "cpu" and dtype == torch.bfloat16
        else f"{precision} is not computed natively on {device.type}"
    )
    raise ValueError(f"precision {precision}: {reason}; use float32 (or auto)")


def softmax_(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the classes of logits (k, *case), in place: no second volume of k classes is allocated."""
    logits -= logits.amax(0, keepdim=True)
    logits.exp_()
    logits /= logits.sum(0, keepdim=True)
    return logits


@dataclass
class Prediction:
    mask: Image  # label map in the input's geometry
    probabilities: np.ndarray | None  # (k, *input array shape) when asked for


class Predictor:
    """Predicts cases with one or more trained models of the same plan.

    Args:
        models: networks in eval mode (deep supervision off or first output used), one per fold.
        spec: the plan's preprocessing.
        patch_size: the plan's patch size.
        num_classes: k, background included.
        device: where the networks run.
        mirror_axes: axes for test-time mirroring (empty for none).
        step: sliding-window step as a fraction of the patch.
        batch_size: windows per forward pass.
        regions_class_order: for region-based models (one sigmoid channel per region, ``num_classes`` regions),
            the label each region's voxels get (``dataset.json``); None for softmax classes.
        autocast_dtype: run the networks under autocast in this precision (``resolve_precision``); None: float32.
        compile: ``torch.compile`` each network (compiled once per window batch shape, at its first case).
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        spec: PreprocessingSpec,
        patch_size: Sequence[int],
        num_classes: int,
        device: torch.device,
        mirror_axes: Sequence[int] = (),
        step: float = 0.5,
        batch_size: int = 1,
        regions_class_order: Sequence[int] | None = None,
        autocast_dtype: torch.dtype | None = None,
        compile: bool = False,
    ) -> None:
        if not models:
            raise ValueError("Predictor needs at least one model")
        self.models = [torch.compile(m, dynamic=False) for m in models] if compile else list(models)
        self.autocast_dtype = autocast_dtype
        self.spec = spec
        self.patch_size = tuple(patch_size)
        self.num_classes = num_classes
        self.output_channels = num_classes  # channels of one model's logits (a subclass may stack several)
        self.device = device
        self.mirror_axes = tuple(mirror_axes)
        self.step = step
        self.batch_size = batch_size
        self.regions_class_order = None if regions_class_order is None else [int(c) for c in regions_class_order]
        if self.regions_class_order is not None and len(self.regions_class_order) != num_classes:
            raise ValueError(
                f"regions_class_order {self.regions_class_order}: one label per region needed, the models have "
                f"{num_classes} region channels"
            )

    def _logits(self, model: nn.Module, image: torch.Tensor) -> torch.Tensor:
        """(c, *case) -> (output_channels, *case); a 2-D plan of 3-D data predicts slice by slice along the first
        axis."""
        if len(self.patch_size) == image.dim() - 1:
            return sliding_window_predict(
                model,
                image,
                self.patch_size,
                self.output_channels,
                self.step,
                self.mirror_axes,
                self.batch_size,
                self.device,
                autocast_dtype=self.autocast_dtype,
            )
        logits = torch.empty((self.output_channels, *image.shape[1:]), dtype=torch.float32, device=image.device)
        for z in range(image.shape[1]):
            logits[:, z] = self._logits(model, image[:, z])  # one slice at a time: no list of slices to stack
        return logits

    @torch.no_grad()
    def probabilities(self, data: np.ndarray) -> np.ndarray:
        """Softmax (or region sigmoid) probabilities (k, *case) of preprocessed data (c, *case), averaged over the
        models."""
        image = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
        total = None
        for model in self.models:
            logits = self._logits(model, image)
            probs = softmax_(logits) if self.regions_class_order is None else logits.sigmoid_()
            total = probs if total is None else total.add_(probs)
            del probs
        return total.div_(len(self.models)).numpy()

    def input_probabilities(self, images: Sequence[Image]) -> np.ndarray:
        """Softmax probabilities (k, *input) of one case given as one Image per channel, in the input's geometry."""
        data, properties = preprocess_image_for_inference(images, self.spec)
        probabilities = self.probabilities(data)  # (k, *case)
        del data  # not needed while restoring, which makes a second volume of k classes
        if self.regions_class_order is None:
            return restore_to_original(probabilities, properties)
        # restoring fills the first channel with 1 outside the crop (softmax background); regions are 0 there
        padded = np.concatenate([np.zeros_like(probabilities[:1]), probabilities])  # (1 + r, *case)
        del probabilities
        return np.ascontiguousarray(restore_to_original(padded, properties)[1:])

    def predict(self, images: Sequence[Image], keep_probabilities: bool = False) -> Prediction:
        """The mask (and, if asked, the probabilities) of one case given as one Image per channel."""
        probabilities = self.input_probabilities(images)  # (k, *input)
        mask = probabilities_to_mask(probabilities, self.regions_class_order)
        return Prediction(images[0].with_array(mask), probabilities if keep_probabilities else None)
