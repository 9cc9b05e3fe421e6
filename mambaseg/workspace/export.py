"""Shareable models: a trained model as one zip (``mambaseg export-model``), and that zip opened for prediction.

The zip holds a small workspace of one dataset, with exactly what prediction needs, and its manifest::

    manifest.json                                     what was exported, and each file's SHA-256
    DATASET/dataset.json                              {"name", "labels", "channel_names"} of the dataset
    DATASET/inference_instructions.json               runs, folds and postprocessing in find-best's schema
                                                      (where the runs share numbered folds), so that the
                                                      extracted folder also works as ``predict -d DATASET``
    DATASET/runs/CONFIGURATION__NETWORK/fold_K/plan.json
    DATASET/runs/CONFIGURATION__NETWORK/fold_K/checkpoint_KIND.pt    KIND: final or best; weights only

Every run the model needs is in it: each member of an ensemble, and each cascade stage's previous stage. The
checkpoints are weights-only copies (``planning.checkpoint.weights_only_copy``: no optimiser or other training
state). ``manifest.json``::

    {"format": "mambaseg-model", "format_version": 2, "mambaseg_version": "0.1.0", "dataset": "DATASET",
     "checkpoint": "final", "source": "inference_instructions" | "runs",
     "runs": [{"run": "DATASET/runs/3d_cascade_fullres__NETWORK", "folds": ["0", "1"],
               "previous": [{"run": "DATASET/runs/3d_lowres__NETWORK", "folds": ["0", ..., "4"]}]}, ...],
     "postprocessing": [{"op": "keep_largest_component", ...}],
     "sources": {"DATASET/runs/.../fold_0/checkpoint_final.pt": "SHA-256 of the checkpoint it was copied from"},
     "files": {"DATASET/dataset.json": "SHA-256 in hex", ...},
     "manifest_sha256": "SHA-256 of every other field of the manifest, as canonical JSON"}

``runs`` is the model (``inference.runs.ModelDescription.describe``): the runs' probabilities are averaged, a
cascade stage taking the mask of its ``previous`` runs as input, then the postprocessing steps applied, as
``predict -d`` does with find-best's instructions. ``predict -m MODEL.zip`` extracts the zip once into
``WORKSPACE/exported_models/ZIPNAME-DIGEST/`` (DIGEST: the zip's SHA-256; see ``layout``) and predicts from
there. Opening a zip refuses: a manifest changed after export (its own digest), an entry that would land outside
that folder (an absolute path, ``..``, a link) or that the manifest does not list, a file whose SHA-256 differs
from the manifest's, a missing file, and a model exported by another format or major version of mambaseg.
Checkpoints are loaded with ``torch.load(weights_only=True)`` (``mambaseg.planning.checkpoint``), so a model never
runs code.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import mambaseg
from mambaseg.inference.postprocessing import InferenceInstructions, check_steps, load_instructions
from mambaseg.inference.runs import ModelDescription, RunError, TrainedRun, check_compatible
from mambaseg.io.atomic import write_atomically
from mambaseg.io.limits import MAX_COMPRESSION_RATIO
from mambaseg.io.locks import owned
from mambaseg.planning.checkpoint import CheckpointError, weights_only_copy
from mambaseg.workspace.layout import (
    DatasetFiles,
    ExportedModelFiles,
    LayoutError,
    RunFiles,
    Workspace,
    file_lock,
)
from mambaseg.workspace.models import find_described_model, find_instructed_runs, find_run, with_previous_stage
from mambaseg.workspace.preparation import WorkspaceArg, dataset_files, open_workspace

FORMAT = "mambaseg-model"
FORMAT_VERSION = 2
MANIFEST_DIGEST = "manifest_sha256"
FROM_INSTRUCTIONS, FROM_RUNS = "inference_instructions", "runs"
_CHUNK = 1 << 20
_MODEL = ExportedModelFiles(Path("model"))  # entry names are relative to its folder
MANIFEST_ENTRY = _MODEL.entry(_MODEL.manifest)


class ModelArchiveError(ValueError):
    """A model that cannot be exported or an exported model that cannot be used; the message names the file."""


@dataclass(frozen=True)
class ExportedModel:
    """What was exported: the zip, and its manifest."""

    path: Path
    manifest: dict[str, Any]

    @property
    def runs(self) -> list[str]:
        return [entry["run"] for entry in self.manifest["runs"]]


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _major(version: str) -> str:
    return str(version).split(".")[0]


def chosen_model(
    workspace: Workspace,
    files: DatasetFiles,
    runs: Sequence[str] | None,
    folds: Sequence[str] | None,
    checkpoint: str,
) -> tuple[ModelDescription, str]:
    """(the model to export, where it comes from): the ``runs`` named, with their folds, else what find-best chose;
    each cascade stage with its previous stage."""
    if runs:
        found = []
        for run in runs:
            folder = Path(run).expanduser()
            folder = folder if folder.is_dir() else files.runs_folder / run
            found.append(with_previous_stage(find_run(folder, folds, checkpoint), checkpoint))
        check_compatible(found, files.runs_folder)
        return ModelDescription(files.runs_folder, tuple(found)), FROM_RUNS
    if folds:
        raise ModelArchiveError(f"folds {' '.join(folds)}: the inference instructions choose them; give runs too")
    return find_instructed_runs(workspace, files.name, checkpoint), FROM_INSTRUCTIONS


def run_entry(dataset: str, run: TrainedRun) -> str:
    """The run's folder as an exported model names it: ``DATASET/runs/CONFIGURATION__NETWORK``."""
    target = _MODEL.workspace.dataset(dataset).run(run.configuration, RunFiles.parse(run.run_dir).network)
    return _MODEL.entry(target.folder)


def _dataset_description(dataset: str, run: TrainedRun) -> dict[str, Any]:
    """The name, labels and channel names, as JSON gives them back."""
    description = {"name": dataset, "labels": dict(run.plans.labels), "channel_names": dict(run.plans.channel_names)}
    return json.loads(json.dumps(description))


def export_model(
    dataset: str,
    output: str | os.PathLike,
    workspace: WorkspaceArg = None,
    runs: Sequence[str] | None = None,
    folds: Sequence[str] | None = None,
    checkpoint: str = "final",
) -> ExportedModel:
    """Write one zip with everything prediction needs: what find-best chose, else the ``runs`` named.

    An ``output`` ending in ``.pt2`` is written as a ``torch.export`` program instead, by
    ``mambaseg.workspace.program.export_program`` (one run; see that module).

    Args:
        dataset: the dataset's name in the workspace (its folder ``WORKSPACE/DATASET``).
        output: the zip to write (replaced if it exists).
        workspace: the workspace.
        runs: run folders, or their names under ``WORKSPACE/DATASET/runs``; default: the runs, folds and
            postprocessing of ``WORKSPACE/DATASET/inference_instructions.json``.
        folds: with ``runs``, the folds to export (default: every fold that has the checkpoint).
        checkpoint: ``final`` or ``best``, for every fold.

    Raises:
        ModelArchiveError: folds without runs, or a run outside the dataset.
        RunError: no instructions, or a run, fold or checkpoint is missing, or the runs do not fit together.
    """
    from mambaseg.workspace import program  # imports this module: imported here, not at the top

    target = Path(output).expanduser()
    with owned(file_lock(target), f"export target {target}"):
        if program.is_program(target):
            return program.export_program(dataset, target, workspace, runs, folds, checkpoint)
        return _export_zip(dataset, target, workspace, runs, folds, checkpoint)


def _export_zip(
    dataset: str,
    output: Path,
    workspace: WorkspaceArg,
    runs: Sequence[str] | None,
    folds: Sequence[str] | None,
    checkpoint: str,
) -> ExportedModel:
    if checkpoint not in ("final", "best"):
        raise ModelArchiveError(f"checkpoint {checkpoint!r}: export final or best")
    ws = open_workspace(workspace)
    files = dataset_files(dataset, ws)
    if not files.folder.is_dir():
        known = sorted(p.parent.name for p in ws.root.glob("*/runs/"))
        raise ModelArchiveError(
            f"{files.folder}: no dataset {dataset!r} in the workspace (trained datasets: {', '.join(known) or 'none'})"
        )
    dataset = files.name
    chosen, source = chosen_model(ws, files, runs, folds, checkpoint)
    model = _MODEL
    inside = model.workspace.dataset(dataset)
    contents: dict[str, Path | bytes] = {}
    sources: dict[str, str] = {}
    for run in chosen.all_runs():
        target = inside.run(run.configuration, RunFiles.parse(run.run_dir).network)
        for fold_name, path in zip(run.fold_names, run.checkpoints, strict=True):
            fold = target.fold(fold_name)
            contents[model.entry(fold.plan)] = Path(path).parent / fold.plan.name
            entry = model.entry(fold.checkpoints.get(checkpoint))
            try:
                contents[entry] = weights_only_copy(path)
            except CheckpointError as err:
                raise ModelArchiveError(str(err)) from err
            sources[entry] = sha256_of(Path(path))
    entries = chosen.describe(lambda run: run_entry(dataset, run))
    if len({entry["run"] for entry in entries}) != len(entries):
        raise ModelArchiveError(f"runs {[entry['run'] for entry in entries]}: a run is named twice")
    contents[model.entry(inside.dataset_json)] = _json(_dataset_description(dataset, chosen.runs[0]))
    if (
        all(fold.isdigit() for entry in entries for fold in entry["folds"])
        and len({tuple(entry["folds"]) for entry in entries}) == 1
    ):
        instructions = (
            load_instructions(files.instructions)
            if source == FROM_INSTRUCTIONS
            else InferenceInstructions(dataset, [], [])
        )
        instructions.runs = [entry["run"] for entry in entries]
        instructions.folds = [int(fold) for fold in entries[0]["folds"]]
        instructions.postprocessing = list(chosen.postprocessing)
        contents[model.entry(inside.instructions)] = _json(instructions.to_dict())
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mambaseg_version": mambaseg.__version__,
        "dataset": dataset,
        "checkpoint": checkpoint,
        "source": source,
        "runs": entries,
        "postprocessing": list(chosen.postprocessing),
        "sources": sources,
        "files": {name: _digest(content) for name, content in sorted(contents.items())},
    }
    manifest = json.loads(json.dumps(manifest))
    manifest[MANIFEST_DIGEST] = manifest_digest(manifest)
    output = Path(output).expanduser()
    output.parent.mkdir(parents=True, exist_ok=True)

    def write(handle) -> None:
        with zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(model.entry(model.manifest), _json(manifest))
            for name, content in sorted(contents.items()):
                if isinstance(content, bytes):
                    archive.writestr(name, content)
                else:
                    archive.write(content, name)

    write_atomically(output, write)
    return ExportedModel(output, manifest)


def manifest_digest(manifest: dict[str, Any]) -> str:
    """The SHA-256 of every field of a manifest but its own digest, as canonical JSON."""
    fields = {key: value for key, value in manifest.items() if key != MANIFEST_DIGEST}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _json(content: Any) -> bytes:
    return (json.dumps(content, indent=2) + "\n").encode()


def _digest(content: Path | bytes) -> str:
    return hashlib.sha256(content).hexdigest() if isinstance(content, bytes) else sha256_of(content)


def _check_entry(archive: Path, info: zipfile.ZipInfo) -> None:
    """ModelArchiveError unless the entry is a plain file or folder that stays inside the target folder."""
    name = info.filename
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise ModelArchiveError(f"{archive}: entry {name!r} is an absolute path; refused")
    if ".." in pure.parts:
        raise ModelArchiveError(f"{archive}: entry {name!r} would land outside the model's folder ('..'); refused")
    kind = stat.S_IFMT(info.external_attr >> 16)  # 0 where the zip records no file type
    if kind == stat.S_IFLNK:
        raise ModelArchiveError(f"{archive}: entry {name!r} is a symbolic link; refused")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise ModelArchiveError(f"{archive}: entry {name!r} is not a plain file; refused")


def read_manifest(archive: Path, zipped: zipfile.ZipFile) -> dict[str, Any]:
    """The manifest of an opened model zip, checked: format, mambaseg major version, fields.

    Raises:
        ModelArchiveError: no manifest, another format or major version, or a malformed field; naming the zip.
    """
    name = MANIFEST_ENTRY
    try:
        manifest = json.loads(zipped.read(name))
    except KeyError as err:
        raise ModelArchiveError(f"{archive}: no {name}; not a model exported by mambaseg export-model") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelArchiveError(f"{archive}: {name} is not valid JSON: {err}") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ModelArchiveError(f"{archive}: {name} is not a mambaseg model manifest")
    version = str(manifest.get("mambaseg_version"))
    if _major(version) != _major(mambaseg.__version__):
        raise ModelArchiveError(
            f"{archive}: exported by mambaseg {version}, incompatible with this mambaseg {mambaseg.__version__} "
            f"(another major version); export it again with mambaseg {_major(mambaseg.__version__)}.x"
        )
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ModelArchiveError(
            f"{archive}: format_version {manifest.get('format_version')!r} is not the supported {FORMAT_VERSION}; "
            "export it again with this mambaseg"
        )
    if manifest.get(MANIFEST_DIGEST) != manifest_digest(manifest):
        raise ModelArchiveError(
            f"{archive}: {name} differs from the digest it records ({MANIFEST_DIGEST}); the manifest was changed "
            "after export; refused"
        )
    files, runs = manifest.get("files"), manifest.get("runs")
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise ModelArchiveError(f"{archive}: {name}: 'files' must map entries to SHA-256 digests")
    if not isinstance(runs, list) or not runs or not all(_is_run_entry(entry) for entry in runs):
        raise ModelArchiveError(f"{archive}: {name}: 'runs' must list {{'run': FOLDER, 'folds': [...]}}, got {runs!r}")
    if manifest.get("checkpoint") not in ("final", "best"):
        raise ModelArchiveError(f"{archive}: {name}: 'checkpoint' must be final or best")
    dataset = manifest.get("dataset")
    if not isinstance(dataset, str) or not _inside(dataset) or "/" in dataset:
        raise ModelArchiveError(f"{archive}: {name}: 'dataset' must be a folder name, got {dataset!r}")
    for entry in _all_run_entries(runs):
        if not _inside(entry["run"]) or not entry["run"].startswith(f"{dataset}/"):
            raise ModelArchiveError(f"{archive}: {name}: run {entry['run']!r} is not a folder of {dataset}/; refused")
    manifest["postprocessing"] = check_steps(manifest.get("postprocessing", []), f"{archive}: {name}")
    return manifest


def _inside(name: str) -> bool:
    """Whether a relative name stays inside the folder it is relative to."""
    pure = PurePosixPath(name.replace("\\", "/"))
    return bool(name) and not pure.is_absolute() and ".." not in pure.parts and ":" not in name


def _is_run_entry(entry: Any) -> bool:
    """Whether ``entry`` is ``{"run": FOLDER, "folds": [...]}`` with, optionally, ``"previous"``: a list of such."""
    if not (
        isinstance(entry, dict)
        and isinstance(entry.get("run"), str)
        and isinstance(entry.get("folds"), list)
        and all(isinstance(fold, str) for fold in entry["folds"])
    ):
        return False
    if "previous" not in entry:
        return True
    previous = entry["previous"]
    return isinstance(previous, list) and bool(previous) and all(_is_run_entry(item) for item in previous)


def _all_run_entries(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The run entries of a manifest, those of the previous stages included."""
    return [item for entry in runs for item in [entry, *_all_run_entries(entry.get("previous", []))]]


def _extract(archive: Path, zipped: zipfile.ZipFile, manifest: dict[str, Any], target: ExportedModelFiles) -> None:
    """Every entry, checked against the manifest, into a staging folder that is then renamed to ``target``."""
    manifest_entry = MANIFEST_ENTRY
    expected = dict(manifest["files"])
    infos = zipped.infolist()
    for info in infos:
        _check_entry(archive, info)
        if not info.is_dir() and info.filename != manifest_entry and info.filename not in expected:
            raise ModelArchiveError(f"{archive}: entry {info.filename!r} is not in the manifest; refused")
    present = {info.filename for info in infos}
    missing = sorted(set(expected) - present)
    if missing:
        raise ModelArchiveError(f"{archive}: {missing[0]!r} is in the manifest but not in the zip")
    target.folder.parent.mkdir(parents=True, exist_ok=True)
    check_entry_sizes(archive, infos, target.folder.parent)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.folder.name}.", suffix=".tmp", dir=target.folder.parent))
    try:
        for info in infos:
            if info.is_dir():
                continue
            path = staging / info.filename
            path.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()

            def copy(handle, info=info, digest=digest) -> None:
                with zipped.open(info) as source:
                    while chunk := source.read(_CHUNK):
                        digest.update(chunk)
                        handle.write(chunk)

            write_atomically(path, copy)
            if info.filename != manifest_entry and digest.hexdigest() != expected[info.filename]:
                raise ModelArchiveError(
                    f"{archive}: {info.filename}: SHA-256 {digest.hexdigest()} differs from the manifest's "
                    f"{expected[info.filename]}; the file was changed after export; refused"
                )
        try:
            os.replace(staging, target.folder)
        except OSError:  # another process extracted it first
            if not target.manifest.is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check_entry_sizes(archive: Path, infos: list[zipfile.ZipInfo], folder: Path) -> None:
    """Before anything is extracted: no entry expands beyond what compression can reach (a zip bomb), and the
    entries fit the free space of ``folder`` (zipfile never yields more than an entry declares)."""
    for info in infos:
        if info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1):
            raise ModelArchiveError(
                f"{archive}: entry {info.filename!r} claims {info.file_size} bytes from {info.compress_size} stored, "
                f"more than {MAX_COMPRESSION_RATIO}:1 compression reaches; refused"
            )
    needed = sum(info.file_size for info in infos)
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise ModelArchiveError(
            f"{archive}: extracting needs {needed / 2**20:.0f} MiB and {folder} has {free / 2**20:.0f} MiB free"
        )


def _check_extracted(archive: Path, manifest_bytes: bytes, target: ExportedModelFiles) -> None:
    """ModelArchiveError unless the extracted copy holds the zip's manifest and the files it lists, unchanged."""
    if target.manifest.read_bytes() != manifest_bytes:
        raise ModelArchiveError(f"{target.manifest}: differs from the manifest of {archive}; remove {target.folder}")
    for name, expected in json.loads(manifest_bytes)["files"].items():
        path = target.folder / name
        if not path.is_file() or sha256_of(path) != expected:
            raise ModelArchiveError(
                f"{path}: missing or changed since {archive} was extracted (SHA-256 differs from the manifest); "
                f"remove {target.folder} to extract it again"
            )


def is_model_archive(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a model zip rather than a run folder or a ``.pt2`` program (also a zip inside)."""
    path = Path(path).expanduser()
    return path.suffix == ".zip" or (path.suffix != ".pt2" and path.is_file() and zipfile.is_zipfile(path))


def open_model_archive(archive: str | os.PathLike, workspace: WorkspaceArg = None) -> ExportedModelFiles:
    """The model zip ``archive`` extracted under ``WORKSPACE/exported_models/`` (once; checked every time).

    Raises:
        ModelArchiveError: not a readable zip, or one refused (see the module's docstring); naming the zip.
    """
    archive = Path(archive).expanduser()
    if not archive.is_file():
        raise ModelArchiveError(f"{archive}: no such model zip")
    target = open_workspace(workspace).exported_model(archive, sha256_of(archive))
    try:
        with zipfile.ZipFile(archive) as zipped:
            manifest = read_manifest(archive, zipped)
            manifest_bytes = zipped.read(MANIFEST_ENTRY)
            if target.manifest.is_file():
                _check_extracted(archive, manifest_bytes, target)
            else:
                _extract(archive, zipped, manifest, target)
    except zipfile.BadZipFile as err:
        raise ModelArchiveError(f"{archive}: not a zip file: {err}") from err
    except LayoutError as err:
        raise ModelArchiveError(f"{archive}: {err}") from err
    return target


def load_exported_model(
    archive: str | os.PathLike, workspace: WorkspaceArg = None, checkpoint: str | None = None
) -> ModelDescription:
    """The model of a zip (its runs, each cascade stage with its previous stage, folds and postprocessing), extracted
    and found.

    Args:
        archive: the zip written by ``export_model``.
        workspace: the workspace whose ``exported_models/`` holds the extracted copy.
        checkpoint: the checkpoint kind asked for; the zip holds one kind (None: that one).

    Raises:
        ModelArchiveError: the zip is refused, or holds another checkpoint kind, or its runs disagree with its
            ``dataset.json``.
        RunError: a run in it cannot be used.
    """
    archive = Path(archive).expanduser()
    target = open_model_archive(archive, workspace)
    manifest = json.loads(target.manifest.read_text())
    if checkpoint is not None and checkpoint != manifest["checkpoint"]:
        raise ModelArchiveError(
            f"{archive}: holds the {manifest['checkpoint']} checkpoints, not checkpoint {checkpoint!r}"
        )
    try:
        return _model_of(archive, target, manifest)
    except (ModelArchiveError, RunError):
        shutil.rmtree(target.folder, ignore_errors=True)  # a model that cannot be used is not kept extracted
        raise


def _model_of(archive: Path, target: ExportedModelFiles, manifest: dict[str, Any]) -> ModelDescription:
    """The model an extracted zip describes, checked against its ``dataset.json``."""
    description_file = target.workspace.dataset(manifest["dataset"]).dataset_json
    try:
        description = json.loads(description_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        entry = target.entry(description_file)
        raise ModelArchiveError(f"{archive}: {entry}: not a readable JSON file: {err}") from err
    if not isinstance(description, dict):
        raise ModelArchiveError(f"{archive}: {target.entry(description_file)}: not a JSON object")
    try:
        found = find_described_model(
            target.workspace.root, manifest["runs"], manifest["postprocessing"], manifest["checkpoint"], archive
        )
    except RunError as err:
        raise ModelArchiveError(str(err)) from err
    if description != _dataset_description(manifest["dataset"], found.runs[0]):
        raise ModelArchiveError(
            f"{archive}: its dataset.json (labels {description.get('labels')}) does not match the checkpoints' "
            f"plans (labels {found.runs[0].plans.labels})"
        )
    return found
