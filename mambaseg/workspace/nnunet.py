"""nnU-Net 2.x as a contestant of ``benchmark``: converted, planned, trained and validated by its own code.

Every nnU-Net step runs in a subprocess of the interpreter the user names (``--with-nnunet PYTHON``), with nnU-Net's
folders in a private root of the benchmark (its ``nnUNet_*`` variables point there)::

    ROOT/
      prepared.json                       the dataset converted here (a root holds one) and the configurations
                                          planned and preprocessed for it
      raw/Dataset990_NAME/                dataset.json, imagesTr/CASE_XXXX<ending>, labelsTr/CASE<ending>: links to
                                          our files; a 4-D multi-channel image is split into one file per channel
      preprocessed/Dataset990_NAME/       nnU-Net's default plans and data, splits_final.json (our folds)
      results/Dataset990_NAME/nnUNetTrainer__nnUNetPlans__CONFIG/
        fold_K/                           nnU-Net's fold: checkpoints, training_log_*.txt, validation/CASE<ending>
        fold_K.benchmark.json             written when the fold is done: settings, dataset, split and results
      logs/                               the output of each nnU-Net command

Case names stay ours, so nnU-Net's validation masks match our cases one to one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mambaseg.data import Dataset, nnunet_folder_name
from mambaseg.io import read_image_channels, write_image
from mambaseg.io.atomic import write_text_atomically
from mambaseg.workspace.layout import FOLD_ALL
from mambaseg.workspace.processes import run_logged

log = logging.getLogger(__name__)

DATASET_ID = 990
PLANS = "nnUNetPlans"
TRAINER = "nnUNetTrainer"
PREPARED = "prepared.json"
RECORD_SUFFIX = ".benchmark.json"
RESULT_MARKER = "MAMBASEG_NNUNET_RESULT "
_TAIL_LINES = 25
_EPOCH_TIME = re.compile(r": Epoch time: (\d+(?:\.\d*)?) s\s*$")

_CHECK_PROGRAM = (
    "import importlib.metadata, nnunetv2.training.nnUNetTrainer.nnUNetTrainer; "
    "print(importlib.metadata.version('nnunetv2'))"
)
# Runs in nnU-Net's interpreter: its own trainer on its own plans, with the benchmark's batch and budget.
_TRAIN_PROGRAM = """
import json, sys, time
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

job = json.loads(sys.argv[1])
torch.set_num_threads(job["threads"])
plans, dataset_json = (json.loads(open(job[key]).read()) for key in ("plans", "dataset_json"))
plans["configurations"][job["configuration"]]["batch_size"] = job["batch_size"]
plans["continue_training"] = False
fold = job["fold"] if job["fold"] == "all" else int(job["fold"])
trainer = nnUNetTrainer(plans, job["configuration"], fold, dataset_json, device=torch.device(job["device"]))
trainer.num_epochs = job["epochs"]
trainer.num_iterations_per_epoch = job["iterations_per_epoch"]
trainer.num_val_iterations_per_epoch = job["val_iterations"]
trainer.run_training()
start = time.perf_counter()
trainer.perform_actual_validation(False)
result = {
    "validation_seconds": time.perf_counter() - start,
    "parameters": sum(p.numel() for p in trainer.network.parameters()),
    "patch_size": [int(s) for s in trainer.configuration_manager.patch_size],
    "batch_size": int(trainer.batch_size),
    "log_file": str(trainer.log_file),
    "output_folder": str(trainer.output_folder),
}
print(MARKER + json.dumps(result), flush=True)
""".replace("MARKER", repr(RESULT_MARKER))


class NnUNetError(RuntimeError):
    """nnU-Net is missing or one of its steps failed; the message names the python, file or command."""


@dataclass(frozen=True)
class NnUNetSettings:
    """How nnU-Net trains a fold: the benchmark's budget, batch and threads.

    Attributes:
        configuration: ``3d_fullres`` or ``2d`` (the same name in both tools).
        epochs: training epochs.
        iterations_per_epoch: training iterations per epoch.
        val_iterations: validation iterations per epoch.
        batch_size: the benchmark's batch, set in nnU-Net's plan so both tools see the same samples.
        threads: torch threads.
        workers: augmentation worker processes (``nnUNet_n_proc_DA``; 0 augments in the training process).
        device: ``cpu`` or ``cuda``.
    """

    configuration: str
    epochs: int
    iterations_per_epoch: int
    val_iterations: int
    batch_size: int
    threads: int
    workers: int
    device: str = "cpu"

    def __post_init__(self) -> None:
        minimum = {"epochs": 1, "iterations_per_epoch": 1, "val_iterations": 1, "batch_size": 1, "threads": 1}
        for name, least in (*minimum.items(), ("workers", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"nnU-Net settings: {name} {value!r} must be an integer >= {least}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"nnU-Net settings: device {self.device!r} must be 'cpu' or 'cuda'")


@dataclass(frozen=True)
class NnUNetFold:
    """A fold nnU-Net trained and validated, with what it cost.

    Attributes:
        predictions: nnU-Net's validation folder: one mask per held-out case, ``CASE`` + the dataset's file ending.
        cases: the held-out cases, in the order of the split.
        samples: epochs x iterations x batch.
        samples_per_second: training samples per second of epoch wall time (nnU-Net's "Epoch time" log lines, the
            first epoch left out when there are more); None when the log has none.
        peak_memory_mb: peak resident memory of the training process.
        inference_seconds_per_case: wall time of the final validation over the number of held-out cases.
        precision: what the training computed in (``float32`` on the CPU).
    """

    fold: str
    predictions: Path
    cases: list[str]
    parameters: int
    patch_size: list[int]
    batch_size: int
    epochs: int
    samples: int
    samples_per_second: float | None
    seconds_per_epoch: float | None
    peak_memory_mb: float | None
    inference_seconds_per_case: float | None
    precision: str


def check_nnunet(python: str | os.PathLike) -> str:
    """nnU-Net's version as that interpreter imports it (with its trainer, so a broken install shows here).

    Raises:
        NnUNetError: the file is missing or not executable, nnU-Net does not import (with the last lines of its
            error output), or its major version is not 2.
    """
    path = Path(python).expanduser()
    if not path.is_file():
        raise NnUNetError(f"nnU-Net python {path}: no such file")
    if not os.access(path, os.X_OK):
        raise NnUNetError(f"nnU-Net python {path}: not executable")
    try:
        result = subprocess.run(
            [str(path), "-c", _CHECK_PROGRAM], capture_output=True, text=True, timeout=600, env=_clean_environment()
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise NnUNetError(f"nnU-Net python {path}: cannot run it: {error}") from error
    if result.returncode != 0:
        raise NnUNetError(f"nnU-Net python {path}: nnunetv2 does not import:\n{_tail(result.stderr)}")
    version = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    if version.split(".")[0] != "2":
        raise NnUNetError(f"nnU-Net python {path}: nnunetv2 version {version!r}; the benchmark needs nnU-Net 2.x")
    return version


def convert_dataset(dataset: Dataset, raw: Path) -> Path:
    """Write ``dataset`` in nnU-Net v2's raw layout under ``raw``; returns its folder (``raw/Dataset990_NAME``).

    Image and label files are linked where they hold one channel each; a multi-channel file is split into one file
    per channel with its geometry. ``dataset.json`` is written last, so a folder with it is a finished conversion.

    Raises:
        ValueError: a case without a label, or a file whose ending is not the dataset's, naming it.
    """
    folder = raw / nnunet_folder_name(DATASET_ID, dataset.name)
    ending = dataset.file_ending
    n_channels = len(dataset.channel_names)
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for case in dataset.cases:
        if case.label_file is None:
            raise ValueError(f"{dataset.dataset_json}: case {case.name} has no label; nnU-Net trains on labelled cases")
        for file in (*case.image_files, case.label_file):
            if not file.name.endswith(ending):
                raise ValueError(f"{file}: its ending is not the dataset's file_ending {ending!r}")
        targets = [folder / "imagesTr" / f"{case.name}_{channel:04d}{ending}" for channel in range(n_channels)]
        if len(case.image_files) == n_channels:
            for source, target in zip(case.image_files, targets, strict=True):
                _link(source, target)
        else:
            channels = read_image_channels(case.image_files[0])
            if len(channels) != n_channels:
                raise ValueError(
                    f"{case.image_files[0]}: {len(channels)} channel(s), {dataset.dataset_json} names {n_channels}"
                )
            for image, target in zip(channels, targets, strict=True):
                write_image(image, target)
        _link(case.label_file, folder / "labelsTr" / f"{case.name}{ending}")
    description: dict[str, Any] = {
        "name": dataset.name,
        "channel_names": {str(index): name for index, name in dataset.channel_names.items()},
        "labels": _nnunet_labels(dataset.labels),
        "numTraining": len(dataset.cases),
        "file_ending": ending,
    }
    if dataset.has_regions:
        description["regions_class_order"] = dataset.regions_class_order
    write_text_atomically(folder / "dataset.json", json.dumps(description, indent=2))
    return folder


def nnunet_epoch_seconds(text: str) -> list[float]:
    """The durations of the ``Epoch time: X s`` lines of an nnU-Net training log, in order."""
    return [float(match[1]) for line in text.splitlines() if (match := _EPOCH_TIME.search(line))]


def training_speed(epoch_seconds: list[float], iterations: int, batch: int) -> tuple[float | None, float | None]:
    """(samples per second, seconds per epoch) over the epochs after the first (all of them when there is one).

    Args:
        epoch_seconds: each epoch's wall time.
        iterations: training iterations per epoch.
        batch: samples per iteration.
    """
    steady = epoch_seconds[1:] if len(epoch_seconds) > 1 else epoch_seconds
    if not steady:
        return None, None
    seconds = sum(steady) / len(steady)
    return (iterations * batch / seconds if seconds > 0 else None), seconds


def train_nnunet_fold(
    python: str | os.PathLike,
    dataset: Dataset,
    root: Path,
    splits: list[dict[str, list[str]]],
    fold: str,
    settings: NnUNetSettings,
) -> NnUNetFold:
    """Train and validate one of our folds with nnU-Net's own plans and trainer, or return it when done already.

    The dataset is converted and planned (nnU-Net's default planner) once per root, each configuration preprocessed
    once; ``splits`` becomes nnU-Net's ``splits_final.json``. A fold finished with other settings is refused; an
    unfinished one is trained from the start.

    Args:
        python: nnU-Net's interpreter.
        dataset: our dataset; its case names are nnU-Net's.
        root: the benchmark's private nnU-Net folder.
        splits: our folds, ``[{"train": [...], "val": [...]}, ...]``.
        fold: a fold number of ``splits``, or ``all``.
        settings: the budget, batch and threads.

    Raises:
        NnUNetError: a command failed (naming it and its log, with its last lines), or the root or the fold was made
            from something else.
        ValueError: a fold or case name that ``splits`` or the dataset lacks.
    """
    root = Path(root).absolute()
    train, val = _fold_cases(dataset, splits, fold)
    name = nnunet_folder_name(DATASET_ID, dataset.name)
    base = root / "results" / name / f"{TRAINER}__{PLANS}__{settings.configuration}"
    folder = base / f"fold_{fold}"
    record = base / f"fold_{fold}{RECORD_SUFFIX}"
    wanted = {"settings": asdict(settings), "dataset": str(dataset.root), "train": train, "val": val}
    finished = _finished_fold(record, wanted) if record.is_file() else None
    if finished is not None:
        return finished
    _prepare(python, dataset, root, settings)
    preprocessed = root / "preprocessed" / name
    splits_json = json.dumps([{"train": list(s["train"]), "val": list(s["val"])} for s in splits], indent=2)
    write_text_atomically(preprocessed / "splits_final.json", splits_json)
    if folder.exists():
        log.info("nnU-Net %s fold %s: unfinished; training it again from the start", settings.configuration, fold)
        shutil.rmtree(folder)
    job = {
        **asdict(settings),
        "plans": str(preprocessed / f"{PLANS}.json"),
        "dataset_json": str(preprocessed / "dataset.json"),
        "fold": fold,
    }
    log_file = root / "logs" / f"train_{settings.configuration}_fold_{fold}.log"
    log.info("nnU-Net: training %s fold %s (output in %s)", settings.configuration, fold, log_file)
    command = [str(python), "-c", _TRAIN_PROGRAM, json.dumps(job)]
    shown = f"{python} -c <nnU-Net training program> '{json.dumps(job)}'"
    peak_mb = _run(command, _environment(root, settings, training=True), log_file, shown)
    result = _fold_result(log_file, settings, fold, val, peak_mb)
    if result.predictions != folder / "validation" or not result.predictions.is_dir():
        raise NnUNetError(
            f"nnU-Net wrote no validation folder {folder / 'validation'} ({result.predictions}); see {log_file}"
        )
    write_text_atomically(record, json.dumps({**wanted, "result": _to_json(result)}, indent=2))
    return result


def _fold_cases(dataset: Dataset, splits: list[dict[str, list[str]]], fold: str) -> tuple[list[str], list[str]]:
    names = dataset.case_names()
    known = set(names)
    for index, split in enumerate(splits):
        unknown = sorted({*split["train"], *split["val"]} - known)
        if unknown:
            raise ValueError(f"splits[{index}]: case(s) {unknown[:5]} are not in {dataset.dataset_json}")
    if fold == FOLD_ALL:
        return names, names
    if not fold.isdigit() or int(fold) >= len(splits):
        raise ValueError(f"fold {fold!r} does not exist: the splits have folds 0-{len(splits) - 1}, or use 'all'")
    split = splits[int(fold)]
    return list(split["train"]), list(split["val"])


def _finished_fold(record: Path, wanted: dict[str, Any]) -> NnUNetFold | None:
    """The recorded result when it was made from ``wanted``, None when its predictions are gone.

    Raises:
        NnUNetError: the record is unreadable, or names what differs from ``wanted``.
    """
    try:
        done = json.loads(record.read_text())
        result = done["result"]
        fold = NnUNetFold(**{**result, "predictions": Path(result["predictions"])})
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise NnUNetError(f"{record}: not a readable record of a finished nnU-Net fold ({error}); remove it") from error
    differences = [
        f"{key} {done.get('settings', {}).get(key)!r} (asked: {value!r})"
        for key, value in wanted["settings"].items()
        if done.get("settings", {}).get(key) != value
    ]
    differences += [
        f"{key} {done.get(key)!r} (asked: {wanted[key]!r})"
        for key in ("dataset", "train", "val")
        if done.get(key) != wanted[key]
    ]
    if differences:
        raise NnUNetError(
            f"{record}: this nnU-Net fold was finished with other settings: {'; '.join(differences)}; "
            f"remove {record} and {record.parent / ('fold_' + fold.fold)} to train it again"
        )
    if not fold.predictions.is_dir():
        log.warning("%s: its predictions %s are gone; training the fold again", record, fold.predictions)
        return None
    log.info("nnU-Net fold %s: finished already (%s)", fold.fold, record)
    return fold


def _prepare(python: str | os.PathLike, dataset: Dataset, root: Path, settings: NnUNetSettings) -> None:
    """Converts the dataset (once per root), then plans and preprocesses the configuration (once each)."""
    state_file = root / PREPARED
    try:
        state = json.loads(state_file.read_text()) if state_file.is_file() else None
    except (OSError, ValueError) as error:
        raise NnUNetError(f"{state_file}: cannot be read ({error}); remove {root} to prepare nnU-Net again") from error
    if state is not None and state.get("dataset") != str(dataset.root):
        raise NnUNetError(
            f"{state_file}: this nnU-Net root holds {state.get('dataset')}, not {dataset.root}; "
            "give each dataset a root of its own"
        )
    raw = root / "raw"
    if state is None:
        log.info("nnU-Net: converting %s into %s", dataset.root, raw)
        for sub in ("raw", "preprocessed", "results", "logs"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        convert_dataset(dataset, raw)
        state = {
            "dataset": str(dataset.root),
            "nnunet_dataset": nnunet_folder_name(DATASET_ID, dataset.name),
            "configurations": [],
        }
        write_text_atomically(state_file, json.dumps(state, indent=2))
    configuration = settings.configuration
    if configuration in state["configurations"]:
        return
    processes = str(max(settings.workers, 1))
    command = [str(python), "-m", "nnunetv2.experiment_planning.plan_and_preprocess_entrypoints"]
    command += ["-d", str(DATASET_ID), "-c", configuration, "-np", processes, "-npfp", processes]
    log_file = root / "logs" / f"plan_and_preprocess_{configuration}.log"
    log.info("nnU-Net: planning and preprocessing %s (output in %s)", configuration, log_file)
    _run(command, _environment(root, settings, training=False), log_file, " ".join(command))
    plans_file = root / "preprocessed" / nnunet_folder_name(DATASET_ID, dataset.name) / f"{PLANS}.json"
    try:
        planned = json.loads(plans_file.read_text())["configurations"]
    except (OSError, ValueError, KeyError) as error:
        raise NnUNetError(f"{plans_file}: nnU-Net's plans cannot be read ({error}); see {log_file}") from error
    if configuration not in planned:
        raise NnUNetError(f"{plans_file}: nnU-Net planned no {configuration!r}, only {sorted(planned)}")
    state["configurations"].append(configuration)
    write_text_atomically(state_file, json.dumps(state, indent=2))


def _fold_result(
    log_file: Path, settings: NnUNetSettings, fold: str, val: list[str], peak_mb: float | None
) -> NnUNetFold:
    """The fold's numbers from the result line of the training program and nnU-Net's training log."""
    lines = [line for line in log_file.read_text(errors="replace").splitlines() if line.startswith(RESULT_MARKER)]
    if not lines:
        raise NnUNetError(f"{log_file}: nnU-Net's training program printed no result line")
    result = json.loads(lines[-1][len(RESULT_MARKER) :])
    training_log = Path(result["log_file"])
    epochs = nnunet_epoch_seconds(training_log.read_text(errors="replace")) if training_log.is_file() else []
    batch = result["batch_size"]
    rate, seconds = training_speed(epochs, settings.iterations_per_epoch, batch)
    return NnUNetFold(
        fold=fold,
        predictions=Path(result["output_folder"]) / "validation",
        cases=val,
        parameters=int(result["parameters"]),
        patch_size=[int(size) for size in result["patch_size"]],
        batch_size=batch,
        epochs=settings.epochs,
        samples=settings.epochs * settings.iterations_per_epoch * batch,
        samples_per_second=rate,
        seconds_per_epoch=seconds,
        peak_memory_mb=peak_mb,
        inference_seconds_per_case=result["validation_seconds"] / len(val) if val else None,
        precision="float32" if settings.device == "cpu" else "float16 autocast",
    )


def _run(command: list[str], env: dict[str, str], log_file: Path, shown: str) -> float | None:
    """Runs ``command`` with its output to ``log_file`` (replaced); returns its peak resident memory in MB.

    Args:
        command: the program and its arguments.
        env: its environment.
        log_file: where its standard output and error go.
        shown: the command as error messages name it.

    Raises:
        NnUNetError: it cannot start or exits with an error, naming it, the log file and its last lines.
    """
    try:
        code, peak_mb = run_logged(command, log_file, env, append=False)
    except OSError as error:
        raise NnUNetError(f"{shown}: cannot start {command[0]}: {error}") from error
    if code != 0:
        raise NnUNetError(
            f"{shown} failed (exit status {code})\n"
            f"its output is in {log_file}; the last lines:\n{_tail(log_file.read_text(errors='replace'))}"
        )
    return peak_mb


def _environment(root: Path, settings: NnUNetSettings, training: bool) -> dict[str, str]:
    """nnU-Net's folders, workers and threads; its planner sets torch's threads to ``nnUNet_n_proc_DA``, so not 0."""
    return _clean_environment() | {
        "nnUNet_raw": str(root / "raw"),
        "nnUNet_preprocessed": str(root / "preprocessed"),
        "nnUNet_results": str(root / "results"),
        "nnUNet_n_proc_DA": str(settings.workers if training else max(settings.workers, 1)),
        "nnUNet_def_n_proc": str(max(settings.workers, 1)),
        "OMP_NUM_THREADS": str(settings.threads),
    }


def _clean_environment() -> dict[str, str]:
    """Our environment without what would make another interpreter import our packages."""
    return {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}


def _nnunet_labels(labels: dict[str, int | list[int]]) -> dict[str, int | list[int]]:
    """Our labels with value 0 named ``background``, as nnU-Net requires."""
    converted: dict[str, int | list[int]] = {"background": 0}
    converted |= {name: value for name, value in labels.items() if value != 0}
    return converted


def _link(source: Path, target: Path) -> None:
    target.unlink(missing_ok=True)
    target.symlink_to(source.resolve())


def _to_json(fold: NnUNetFold) -> dict[str, Any]:
    return asdict(fold) | {"predictions": str(fold.predictions)}


def _tail(text: str) -> str:
    return "\n".join(text.rstrip().splitlines()[-_TAIL_LINES:])
