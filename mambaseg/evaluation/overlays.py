"""Pictures of a case's masks over its image: slices through the centre of the structure, for the run reports.

``overlay_png`` draws the reference (top row) and the prediction (bottom row) over the image's first channel, each
label in its colour, on three orthogonal slices through the centre of the reference's foreground (axes in array
order, each shown at its spacing's aspect); a case with a single slice (a 2-D image, or a volume one voxel thick)
gets that one slice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from scipy import ndimage

from mambaseg.evaluation.html import figure_png
from mambaseg.io import Image

OVERLAY_DPI = 80
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
WINDOW_PERCENTILES = (0.5, 99.5)


def _window(image: np.ndarray) -> tuple[float, float]:
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(finite, WINDOW_PERCENTILES)
    return float(low), float(high if high > low else low + 1)


def _colored(mask: np.ndarray) -> np.ndarray:
    """An RGBA picture of a label slice: each label its colour, background transparent."""
    rgba = np.zeros((*mask.shape, 4))
    for label in np.unique(mask[mask > 0]):
        color = COLORS[(int(label) - 1) % len(COLORS)]
        rgba[mask == label] = [int(color[i : i + 2], 16) / 255 for i in (1, 3, 5)] + [0.5]
    return rgba


def cut_axes(shape: Sequence[int]) -> list[int]:
    """The axes to slice across: each of the three, or only the single-voxel one of a 2-D case."""
    single = [axis for axis, size in enumerate(shape) if size == 1]
    return single[:1] if single else list(range(len(shape)))


def structure_centre(reference: np.ndarray, prediction: np.ndarray) -> tuple[int, ...]:
    """The voxel at the centre of the reference's foreground, else of the prediction's, else of the image."""
    for mask in (reference, prediction):
        if mask.any():
            return tuple(int(round(c)) for c in ndimage.center_of_mass(mask > 0))
    return tuple(size // 2 for size in reference.shape)


def overlay_png(
    image: Image, reference: np.ndarray, prediction: np.ndarray, title: str, label_names: Mapping[str, str]
) -> bytes:
    """The reference (top row) and the prediction (bottom row) over the image, on slices through the structure.

    Args:
        image: the case's first channel.
        reference: the reference mask, of the image's shape.
        prediction: the predicted mask, of the image's shape.
        title: the figure's title.
        label_names: label value -> name, for the legend.
    """
    array, spacing = image.array, image.array_spacing
    if array.ndim == 2:  # a 2-D image: one slice
        array, reference, prediction = array[None], reference[None], prediction[None]
        spacing = (1.0, *spacing)
    centre = structure_centre(reference, prediction)
    cuts = []  # (axis, aspect, image, reference, prediction) of each slice
    for axis in cut_axes(array.shape):
        index = tuple(centre[axis] if a == axis else slice(None) for a in range(3))
        rows, cols = [a for a in range(3) if a != axis]
        cuts.append(
            (axis, spacing[rows] / spacing[cols], array[index].astype(np.float32), reference[index], prediction[index])
        )
    low, high = _window(np.concatenate([cut[2].ravel() for cut in cuts]))
    figure = Figure(figsize=(3.4 * len(cuts), 7.0), dpi=OVERLAY_DPI)
    FigureCanvasAgg(figure)
    grid = figure.subplots(2, len(cuts), squeeze=False)
    for column, (axis, aspect, picture, *masks) in enumerate(cuts):
        for row, (kind, mask) in enumerate(zip(("reference", "prediction"), masks, strict=True)):
            ax = grid[row, column]
            ax.imshow(picture, cmap="gray", vmin=low, vmax=high, aspect=aspect, interpolation="nearest")
            ax.imshow(_colored(mask), aspect=aspect, interpolation="nearest")
            ax.set_title(f"{kind}, axis {axis} slice {centre[axis]}", fontsize="small")
            ax.set_axis_off()
    present = sorted({int(v) for cut in cuts for mask in cut[3:] for v in np.unique(mask) if v > 0})
    handles = [Patch(color=COLORS[(v - 1) % len(COLORS)], label=label_names.get(str(v), str(v))) for v in present]
    if handles:
        figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize="small")
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.05 if handles else 0, 1, 1))
    return figure_png(figure)
