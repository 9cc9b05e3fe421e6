"""Prediction as a library call: any form of trained model, opened once, predicting images in memory or files.

Example::

    import numpy as np
    from mambaseg import Predictor

    predictor = Predictor.from_model("model.zip", device="cpu")     # or a run folder, a .pt2, dataset=...
    prediction = predictor.predict(volume, spacing=(1.0, 1.0, 1.0))  # volume: (z, y, x), or (c, z, y, x)
    prediction.mask.array                                            # labels, the input's shape
    predictor.predict_folder("scans/", "masks/")                     # what ``mambaseg predict`` runs

A model is one of: a run folder (its folds averaged; a cascade stage with its previous stage), the dataset's
inference instructions (``dataset=``: what find-best chose, an ensemble, postprocessing), an exported zip, or a
``.pt2`` program. Each becomes the same pipeline (``mambaseg.inference.pipeline``); the networks are loaded at the
first prediction, so that a command checks its inputs and outputs before it spends time on them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np

from mambaseg.inference.batch import BatchOptions, BatchSummary, RunInfo, case_outputs, predict_cases, select_part
from mambaseg.inference.dicom_seg import check_source_series, load_segment_codes
from mambaseg.inference.inputs import (
    InputCase,
    InputError,
    check_channels,
    check_output_folder,
    check_outputs_apart,
    discover_cases,
)
from mambaseg.inference.pipeline import Pipeline, Prediction, WindowSettings
from mambaseg.inference.precision import resolve_precision
from mambaseg.inference.rtstruct import check_rtstruct_source
from mambaseg.inference.runs import ModelDescription, build_pipeline
from mambaseg.io import Image
from mambaseg.io.progress import Progress
from mambaseg.ops.scan_dispatch import check_backend_environment
from mambaseg.workspace.export import is_model_archive, load_exported_model
from mambaseg.workspace.models import find_instructed_runs, find_model
from mambaseg.workspace.preparation import WorkspaceArg, dataset_files, open_workspace
from mambaseg.workspace.program import DEVICE as PROGRAM_DEVICE
from mambaseg.workspace.program import is_program, program_model
from mambaseg.workspace.runtime import resolve_device

log = logging.getLogger(__name__)

MIN_STEP = 0.1  # 10 windows per patch length and axis: 1000 times the windows of step 1 in 3-D
DEFAULT_STEP = 0.5  # nnU-Net's
FAST_STEP = 0.75  # fast: windows overlap by a quarter, so every voxel near a window's edge has a second opinion

PipelineBuilder = Callable[[WindowSettings], Pipeline]


def _describe_info(description: ModelDescription) -> RunInfo:
    first = description.runs[0]
    return RunInfo(
        description.name,
        first.plans.channel_names,
        first.label_names,
        regions_class_order=first.plans.regions_class_order,
    )


def open_model(
    model: str | os.PathLike | None,
    dataset: str | None,
    workspace: WorkspaceArg,
    folds: Sequence[str] | None,
    checkpoint: str | None,
) -> tuple[PipelineBuilder, RunInfo]:
    """What ``model`` or ``dataset`` names, checked on disk: a function building its pipeline, and its record."""
    if (model is None) == (dataset is None):
        raise ValueError(
            "give one of model (a run folder, a model zip or a .pt2 program) and dataset (as find-best chose)"
        )
    if model is not None and is_program(model):
        return program_model(model, folds, checkpoint)
    if model is not None and is_model_archive(model):
        if folds:
            raise ValueError(f"folds {' '.join(folds)}: an exported model predicts with the folds it holds")
        description = load_exported_model(model, open_workspace(workspace), checkpoint)
    elif model is not None:
        description = find_model(model, folds, checkpoint or "final")
    elif folds:
        raise ValueError(f"folds {' '.join(folds)}: with dataset the instructions choose the folds; give a model")
    else:
        ws = open_workspace(workspace)
        description = find_instructed_runs(ws, dataset_files(dataset, ws).name, checkpoint or "final")
    return partial(build_pipeline, description), _describe_info(description)


def _as_images(
    image: Image | Sequence[Image] | np.ndarray, spacing: Sequence[float] | None, channels: int
) -> list[Image]:
    """One Image per channel of what ``Predictor.predict`` was given."""
    if isinstance(image, Image):
        images = [image]
    elif isinstance(image, np.ndarray):
        if spacing is None:
            raise ValueError("predict: a numpy array needs its spacing (mm per axis, x first as in ITK)")
        array = image if image.ndim == len(spacing) + 1 else image[None]  # (c, *spatial)
        if array.ndim != len(spacing) + 1:
            raise ValueError(f"predict: an array of shape {image.shape} does not fit spacing {tuple(spacing)}")
        ndim = len(spacing)
        identity = tuple(float(i == j) for i in range(ndim) for j in range(ndim))
        images = [Image(channel, tuple(map(float, spacing)), (0.0,) * ndim, identity) for channel in array]
    else:
        images = list(image)
    if spacing is not None and not isinstance(image, np.ndarray):
        raise ValueError("predict: spacing is for a numpy array; an Image carries its own")
    if len(images) != channels:
        raise ValueError(f"predict: {len(images)} channel(s) given, the model takes {channels}")
    return images


class Predictor:
    """A trained model, opened once, predicting cases in memory (``predict``) or from files (``predict_folder``).

    Build it with ``from_model``.
    """

    def __init__(self, build: PipelineBuilder, info: RunInfo, settings: WindowSettings) -> None:
        self.info = info
        self.settings = settings
        self._build = build
        self._pipeline: Pipeline | None = None

    @classmethod
    def from_model(
        cls,
        model: str | os.PathLike | None = None,
        dataset: str | None = None,
        workspace: WorkspaceArg = None,
        folds: Sequence[str] | None = None,
        checkpoint: str | None = None,
        device: str = "auto",
        precision: str = "auto",
        mirroring: bool = True,
        step: float | None = None,
        fast: bool = False,
        compile: bool = False,
    ) -> Predictor:
        """Open a model for prediction.

        Args:
            model: a run folder ``WORKSPACE/DATASET/runs/CONFIGURATION__NETWORK`` (its folds averaged; a cascade
                stage with its previous stage run), a zip written by ``export_model`` (extracted once into
                ``WORKSPACE/exported_models/``), or a ``.pt2`` program written by ``export_model``.
            dataset: instead of ``model``: the runs, folds and postprocessing of the dataset's inference
                instructions (what find-best chose).
            workspace: the workspace (with ``dataset``, or a model zip).
            folds: with a run folder, the folds to average (default: every trained fold).
            checkpoint: ``final`` or ``best`` per fold (default: final; for a zip or program, the kind it holds).
            device: ``auto`` (CUDA when available, else the CPU; a ``.pt2`` program: the CPU it was exported for),
                ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
            precision: ``auto`` (bfloat16 on CPUs that compute it natively, float16 on CUDA, else float32),
                ``float32``, ``bfloat16`` or ``float16``; a precision the device lacks natively is refused.
            mirroring: test-time mirroring.
            step: sliding-window step as a fraction of the patch, in [0.1, 1] (default: 0.5; with ``fast`` 0.75).
            fast: no mirroring and step 0.75 (unless ``step`` is given).
            compile: ``torch.compile`` the networks (pays once per process).

        Raises:
            ValueError: a bad option, or a model that cannot be used (its subclasses name the file and the problem).
        """
        if step is None:
            step = FAST_STEP if fast else DEFAULT_STEP
        if not MIN_STEP <= step <= 1:
            raise ValueError(f"step {step}: must be between {MIN_STEP} and 1 (a fraction of the patch)")
        program = model is not None and is_program(model)
        if program and device == "auto":
            log.info("%s was exported for the %s: predicting there", model, PROGRAM_DEVICE)
            device = PROGRAM_DEVICE
        torch_device = resolve_device(device)
        if program and torch_device.type != PROGRAM_DEVICE:
            raise ValueError(
                f"device {device}: {model} was exported for the {PROGRAM_DEVICE} and runs there; predict with device "
                f"{PROGRAM_DEVICE} (or auto)"
            )
        autocast_dtype = resolve_precision(precision, torch_device)
        if program and autocast_dtype is not None:
            if precision != "auto":
                raise ValueError(
                    f"precision {precision}: {model} is a torch.export program, whose graph runs in the float32 it "
                    "was exported in; use float32 (or auto)"
                )
            autocast_dtype = None
        check_backend_environment(torch_device)
        build, info = open_model(model, dataset, workspace, folds, checkpoint)
        settings = WindowSettings(torch_device, mirroring and not fast, step, autocast_dtype, compile)
        return cls(build, info, settings)

    @property
    def pipeline(self) -> Pipeline:
        """The pipeline, its networks loaded on first use."""
        if self._pipeline is None:
            settings = self.settings
            log.info(
                "predicting in %s, step %g, mirroring %s%s",
                "float32" if settings.autocast_dtype is None else str(settings.autocast_dtype).removeprefix("torch."),
                settings.step,
                "on" if settings.mirroring else "off",
                ", compiled" if settings.compile else "",
            )
            self._pipeline = self._build(settings)
        return self._pipeline

    def predict(
        self,
        image: Image | Sequence[Image] | np.ndarray,
        spacing: Sequence[float] | None = None,
        keep_probabilities: bool = False,
    ) -> Prediction:
        """The mask of one case in memory, in its geometry; nothing is read or written.

        Args:
            image: an ``Image`` (one channel), one Image per channel, or a numpy array (``(*spatial)`` for one
                channel or ``(c, *spatial)``, axes in numpy order: (z, y, x)) with ``spacing``.
            spacing: for an array: mm per axis in ITK order (x, y, z), as ``Image.spacing``.
            keep_probabilities: also return the probabilities (k, *spatial), float32.

        Returns:
            ``Prediction``: ``mask`` an Image with the input's geometry (origin 0, identity direction for an array),
            ``probabilities`` when asked for.
        """
        images = _as_images(image, spacing, len(self.info.channel_names))
        return self.pipeline.predict(images, keep_probabilities=keep_probabilities)

    def predict_folder(
        self,
        input: str | os.PathLike,
        output: str | os.PathLike,
        save_probabilities: bool = False,
        dicom_seg: bool = False,
        segment_codes: str | os.PathLike | None = None,
        overwrite: bool = False,
        num_parts: int = 1,
        part_id: int = 0,
        series: str | None = None,
        progress: Progress | None = None,
        statistics: bool = False,
        rtstruct: bool = False,
    ) -> BatchSummary:
        """Predict files into ``output`` (what ``mambaseg predict`` runs); see ``mambaseg.workspace.predict``."""
        input, output = Path(input).expanduser(), Path(output).expanduser()
        check_paths(input, output, dicom_seg, segment_codes)
        info = self.info
        if segment_codes is not None:
            info = dataclasses.replace(info, segment_codes=load_segment_codes(segment_codes, info.label_names))
        cases = discover_cases(input, series, len(info.channel_names))
        for case in cases:
            check_channels(case, info.channel_names)
        options = BatchOptions(save_probabilities, dicom_seg, overwrite, statistics, rtstruct)
        check_outputs_apart(cases, lambda case: case_outputs(case, output, options).values())
        cases = select_part(cases, num_parts, part_id)
        if dicom_seg or rtstruct:
            _check_dicom_sources(cases, dicom_seg, rtstruct)
        summary = predict_cases(self.pipeline, cases, output, info, options, progress)
        summary.num_parts, summary.part_id = num_parts, part_id
        return summary


def check_paths(
    input: Path, output: Path, dicom_seg: bool = False, segment_codes: str | os.PathLike | None = None
) -> None:
    """What can be checked of ``predict``'s paths before the model is opened: the output folder apart from the input
    and writable, segment codes only with a DICOM-SEG."""
    if segment_codes is not None and not dicom_seg:
        raise ValueError(f"segment_codes {segment_codes}: codes are for a DICOM-SEG; ask for dicom_seg too")
    check_output_folder(input, output)
    check_writable(output)


def check_writable(output: Path) -> None:
    """ValueError naming ``output`` (or the folder that would hold it) when masks cannot be written there."""
    existing = output
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"output {output}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"output {output}: {existing} is not writable")


def _check_dicom_sources(cases: list[InputCase], dicom_seg: bool, rtstruct: bool) -> None:
    """Before predicting: the DICOM series that a DICOM-SEG or an RTSTRUCT will reference can be referenced."""
    dicom = [case for case in cases if case.kind == "dicom"]
    if not dicom:
        outputs = " and ".join(name for name, asked in (("DICOM-SEG", dicom_seg), ("RTSTRUCT", rtstruct)) if asked)
        log.warning("%s output applies to DICOM input only; none of the cases is DICOM", outputs)
    for case in dicom:
        if dicom_seg:
            check_source_series(case.sources[0], case.series_uid or "")
        if rtstruct:
            check_rtstruct_source(case.sources[0], case.series_uid or "")
