"""A trained run as one ``torch.export`` program (``export-model DATASET MODEL.pt2``), and that program predicting.

Dimension letters: b batch, c channels, f folds, k classes, *patch the plan's patch axes, *case the case's axes.

The program is one module holding every exported fold's network: (b, c, *patch) -> (b, f·k, *patch), the folds'
logits side by side along the channels, with the batch dimension dynamic (fixed at 1, and recorded so, where a
network does not export with a dynamic batch). It is saved with ``torch.export.save``; its ``extra_files`` hold
``mambaseg.json``, the record prediction needs and checks::

    {"format": "mambaseg-program", "format_version": 2, "mambaseg_version": "0.1.0", "dataset": "DATASET",
     "source": "inference_instructions" | "runs", "checkpoint": "final",
     "runs": [{"run": "DATASET/runs/CONFIGURATION__NETWORK", "folds": ["0", "1"]}],
     "checkpoints": {"0": "SHA-256 of fold_0's checkpoint", ...},     what it was made from
     "configuration": "3d_fullres", "plans": {...},                   the plans, with the folds' plan
     "patch_size": [...], "num_classes": k, "mirror_axes": [0, 1, 2], "batch": "dynamic" | 1,
     "postprocessing": [...], "device": "cpu",
     "program_sha256": "SHA-256 of every other field of the record, the graph and every weight"}

``predict -m MODEL.pt2`` runs the program through the same preprocessing, sliding window (its windows give the
f·k logits at once), per-fold softmax averaged, restoring to the input's geometry and postprocessing as a run
folder does, as the pipeline's one stage (``inference.pipeline``), on the CPU it was exported for (``--device
auto`` picks it, saying so; another device is refused). A file without the record, of another format version or
major mambaseg version, or whose record, graph or weights differ from the record's digest, is refused naming the
file.

The program needs only ``torch`` and ``mambaseg_kernels`` (which registers the selective-scan op) to run::

    import torch, mambaseg_kernels
    program = torch.export.load("model.pt2")
    logits = program.module()(patch)   # (b, f·k, *patch)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

import mambaseg
from mambaseg.inference.batch import RunInfo
from mambaseg.inference.pipeline import ModelStage, Pipeline, WindowSettings
from mambaseg.inference.postprocessing import check_steps
from mambaseg.inference.runs import load_model, plan_from_dict, stage_plan
from mambaseg.io.atomic import write_atomically
from mambaseg.planning.model import mirror_axes_for
from mambaseg.planning.plans import Plans, PlansError, plans_from_dict
from mambaseg.workspace.export import ExportedModel, ModelArchiveError, chosen_model, run_entry, sha256_of
from mambaseg.workspace.preparation import WorkspaceArg, dataset_files, open_workspace

log = logging.getLogger(__name__)

PROGRAM_FORMAT = "mambaseg-program"
PROGRAM_FORMAT_VERSION = 2
PROGRAM_SUFFIX = ".pt2"
RECORD = "mambaseg.json"  # the key of the record in the program's extra_files
DYNAMIC = "dynamic"
DIGEST = "program_sha256"  # the record's field holding ``program_digest``
DEVICE = "cpu"  # where programs are exported, and run
EXAMPLE_BATCH = 2  # the batch traced; 1 would specialise the batch dimension


class ProgramError(ModelArchiveError):
    """A program that cannot be written or used; the message names the file."""


class FoldStack(nn.Module):
    """The folds' networks as one module: (b, c, *patch) -> (b, f·k, *patch)."""

    def __init__(self, networks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.folds = nn.ModuleList(networks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([network(x) for network in self.folds], dim=1)


def is_program(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a ``torch.export`` program (by its suffix)."""
    return Path(path).suffix == PROGRAM_SUFFIX


def program_digest(program: torch.export.ExportedProgram, record: dict[str, Any]) -> str:
    """The SHA-256 of a program's record (every field but the digest itself, as canonical JSON), its graph, and
    every weight and constant (names, shapes, dtypes and bytes): everything that can change a prediction."""
    fields = {key: value for key, value in record.items() if key != DIGEST}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode())
    digest.update(str(program.graph).encode())
    tensors = {**program.state_dict, **program.constants}
    for name in sorted(tensors):
        value = tensors[name]
        if not isinstance(value, torch.Tensor):
            digest.update(f"{name}:{type(value).__name__}".encode())
            continue
        t = value.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _export(stack: FoldStack, example: torch.Tensor) -> tuple[torch.export.ExportedProgram, str | int]:
    """The program with a dynamic batch, else with the batch fixed at 1 (and which of the two)."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad():
        try:
            return torch.export.export(stack, (example,), dynamic_shapes={"x": {0: batch}}), DYNAMIC
        except Exception as err:  # noqa: BLE001  (any failure to keep the batch symbolic: fix it at 1)
            log.warning("the batch dimension does not export as dynamic (%s); exporting batch 1", err)
            return torch.export.export(stack, (example[:1],)), 1


def export_program(
    dataset: str,
    output: str | os.PathLike,
    workspace: WorkspaceArg = None,
    runs: Sequence[str] | None = None,
    folds: Sequence[str] | None = None,
    checkpoint: str = "final",
) -> ExportedModel:
    """Write one run's folds as a ``torch.export`` program ``output`` (``.pt2``) with its record (module doc).

    Args:
        dataset: the dataset's name in the workspace.
        output: the ``.pt2`` file to write (replaced if it exists).
        workspace: the workspace.
        runs: one run folder or name under ``WORKSPACE/DATASET/runs``; default: the run of the dataset's
            inference instructions (with their folds and postprocessing), when they name one run.
        folds: with ``runs``, the folds to export (default: every fold that has the checkpoint).
        checkpoint: ``final`` or ``best``, for every fold.

    Raises:
        ProgramError: more than one run, a cascade run, or an output without the ``.pt2`` suffix.
        ModelArchiveError, RunError: as ``export_model``.
    """
    output = Path(output).expanduser()
    if not is_program(output):
        raise ProgramError(f"output {output}: a torch.export program is written to a {PROGRAM_SUFFIX} file")
    if checkpoint not in ("final", "best"):
        raise ProgramError(f"checkpoint {checkpoint!r}: export final or best")
    ws = open_workspace(workspace)
    files = dataset_files(dataset, ws)
    if not files.folder.is_dir():
        raise ProgramError(f"{files.folder}: no dataset {dataset!r} in the workspace")
    dataset = files.name
    chosen, source = chosen_model(ws, files, runs, folds, checkpoint)
    postprocessing = chosen.postprocessing
    if len(chosen.runs) != 1:
        raise ProgramError(f"runs {chosen.name}: a {PROGRAM_SUFFIX} program holds one run; name one with runs")
    run = chosen.runs[0]
    if run.plan.previous_stage is not None:
        raise ProgramError(
            f"{run.run_dir}: a cascade stage (after {run.plan.previous_stage!r}) needs its previous stage's masks; "
            f"export it as a zip"
        )
    networks = [load_model(run, path, torch.device("cpu")) for path in run.checkpoints]
    example = torch.zeros(EXAMPLE_BATCH, len(run.plans.channel_names), *run.plan.patch_size)
    program, batch = _export(FoldStack(networks), example)
    fold_names = run.fold_names
    record = {
        "format": PROGRAM_FORMAT,
        "format_version": PROGRAM_FORMAT_VERSION,
        "mambaseg_version": mambaseg.__version__,
        "dataset": dataset,
        "source": source,
        "checkpoint": checkpoint,
        "runs": [{"run": run_entry(dataset, run), "folds": fold_names}],
        "checkpoints": {fold: sha256_of(Path(path)) for fold, path in zip(fold_names, run.checkpoints, strict=True)},
        "configuration": run.configuration,
        "plans": run.plans.to_dict(),
        "patch_size": list(run.plan.patch_size),
        "num_classes": run.plans.num_classes,
        "mirror_axes": list(mirror_axes_for(run.plan)),
        "batch": batch,
        "postprocessing": list(postprocessing),
        "device": DEVICE,
    }
    record = json.loads(json.dumps(record))
    record[DIGEST] = program_digest(program, record)
    output.parent.mkdir(parents=True, exist_ok=True)
    extra_files = {RECORD: json.dumps(record)}
    write_atomically(output, lambda handle: torch.export.save(program, handle, extra_files=extra_files))
    return ExportedModel(output, record)


def _major(version: str) -> str:
    return str(version).split(".")[0]


def _check_record(path: Path, text: str) -> dict[str, Any]:
    """The record of a program, checked: present, this format and version, this major mambaseg version."""
    if not text:
        raise ProgramError(f"{path}: holds no {RECORD}; not a program written by mambaseg export-model")
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        raise ProgramError(f"{path}: its {RECORD} is not valid JSON: {err}") from err
    if not isinstance(record, dict) or record.get("format") != PROGRAM_FORMAT:
        raise ProgramError(f"{path}: its {RECORD} is not a mambaseg program record (format {PROGRAM_FORMAT!r})")
    if record.get("format_version") != PROGRAM_FORMAT_VERSION:
        raise ProgramError(
            f"{path}: format_version {record.get('format_version')!r} is not the supported {PROGRAM_FORMAT_VERSION}; "
            "export it again with this mambaseg"
        )
    version = str(record.get("mambaseg_version"))
    if _major(version) != _major(mambaseg.__version__):
        raise ProgramError(
            f"{path}: exported by mambaseg {version}, incompatible with this mambaseg {mambaseg.__version__} "
            "(another major version); export it again"
        )
    return record


def load_program(path: str | os.PathLike) -> tuple[torch.export.ExportedProgram, dict[str, Any]]:
    """The program of ``path`` and its record, checked (module doc).

    Raises:
        ProgramError: no such file, not a program, no record or another format or version, or a graph or weights
            that differ from the record's digest; naming the file.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ProgramError(f"{path}: no such program file")
    extra = {RECORD: ""}
    try:
        program = torch.export.load(path, extra_files=extra)
    except Exception as err:  # noqa: BLE001  (torch raises many kinds for a file it cannot read)
        raise ProgramError(f"{path}: not a torch.export program: {type(err).__name__}: {err}") from err
    record = _check_record(path, extra[RECORD])
    if program_digest(program, record) != record.get(DIGEST):
        raise ProgramError(
            f"{path}: its {RECORD}, graph or weights differ from the digest its {RECORD} records; the file was "
            "changed after export; refused"
        )
    return program, record


def _program_pipeline(
    path: Path, module: nn.Module, record: dict[str, Any], plans: Plans, settings: WindowSettings
) -> Pipeline:
    """The program as the pipeline's one stage: its one network gives every fold's logits side by side."""
    if settings.device.type != DEVICE:
        raise ProgramError(
            f"device {settings.device}: {path} was exported for the {DEVICE} and runs there; predict with device "
            f"{DEVICE} (or auto)"
        )
    source = f"{path}: {RECORD}"
    plan = stage_plan(plans, record["configuration"], source)
    if record["batch"] != DYNAMIC:
        plan = dataclasses.replace(plan, batch_size=int(record["batch"]))
    entry = record["runs"][0]
    log.info("predicting with the program %s (%s, folds %s)", path, entry["run"], entry["folds"])
    stage = ModelStage([module], plan, settings, members_per_network=len(entry["folds"]))
    return Pipeline(stage, record["postprocessing"])


def program_model(
    path: str | os.PathLike, folds: Sequence[str] | None = None, checkpoint: str | None = None
) -> tuple[Callable[[WindowSettings], Pipeline], RunInfo]:
    """What ``predict`` needs of a program file: a function building its pipeline, and its record for outputs.

    Raises:
        ProgramError: the file is refused (``load_program``), folds are asked for, another checkpoint kind is
            asked for, or its record's plans are malformed.
    """
    path = Path(path).expanduser()
    if folds:
        raise ProgramError(f"folds {' '.join(folds)}: {path} predicts with the folds it holds")
    program, record = load_program(path)
    if checkpoint is not None and checkpoint != record.get("checkpoint"):
        raise ProgramError(f"{path}: holds the {record.get('checkpoint')} checkpoints, not checkpoint {checkpoint!r}")
    try:
        plans = plans_from_dict(record["plans"], source=f"{path}: {RECORD}")
        plan_from_dict(record["plans"]["configurations"][record["configuration"]])
        if plans.configurations[record["configuration"]].previous_stage is not None:
            raise ProgramError(f"{path}: its {RECORD} holds a cascade stage, which a program cannot run")
        record["postprocessing"] = check_steps(record.get("postprocessing", []), f"{path}: {RECORD}")
    except (KeyError, TypeError, PlansError) as err:
        raise ProgramError(f"{path}: its {RECORD} does not hold the plans prediction needs: {err}") from err
    labels = {value: name for name, value in plans.labels.items() if isinstance(value, int)}
    info = RunInfo(
        f"{path.name} ({record['runs'][0]['run']})",
        plans.channel_names,
        labels,
        regions_class_order=plans.regions_class_order,
    )
    return partial(_program_pipeline, path, program.module(), record, plans), info
