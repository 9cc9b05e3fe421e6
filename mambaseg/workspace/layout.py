"""Every path and file name of the workspace, built and parsed here and nowhere else.

::

    WORKSPACE/
      raw/DATASET/                                   datasets given by name (``mambaseg demo`` writes one here)
      DATASET/
        fingerprint.json  plans.json  splits.json  inference_instructions.json  report.html (find-best's)
        preprocessed/CONFIGURATION/                  CASE.npz + CASE.json per case, preprocessing.json
                                                     (3d_cascade_fullres shares 3d_fullres's folder)
        runs/CONFIGURATION__NETWORK/fold_K/          K = 0..4 or ``all``
          config.yaml  plan.json  checkpoint_{latest,best,final}.pt
          metrics.csv  progress.png  training.log  report.html
          validation/                                CASE<ending> (masks), CASE.npz (probabilities), summary.json,
                                                     metrics.csv, prediction_times.json
          predicted_next_stage/NEXT_CONFIGURATION/   a 3d_lowres fold's validation masks on the next stage's
                                                     preprocessed grid: CASE.npz + CASE.json (what it was made from)
        benchmarks/NAME/                             results.json  results.csv  report.md  report.html
                                                     dice_per_case.png; logs/ and measurements/ per contestant
                                                     and fold; nnunet/ (nnU-Net's own folders, with --with-nnunet)
      pretraining/IMAGEFOLDER__NETWORK/              config.yaml, checkpoints, log files, encoder.pt
      exported_models/ZIPNAME-DIGEST/                models given to ``predict -m MODEL.zip``, extracted (a cache)

An exported model (``mambaseg export-model``; the zip's format is in ``mambaseg.workspace.export``) is a
small workspace of one dataset: ``manifest.json``, ``DATASET/dataset.json`` (labels and channel names),
``DATASET/inference_instructions.json``, and the runs' ``fold_K/plan.json`` and checkpoints.

Lower layers never compose these names: they are handed the paths (``FoldFiles``, ``RunLogFiles``...).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mambaseg.data.dataset import split_file_ending

WORKSPACE_ENV = "MAMBASEG_WORKSPACE"
DEFAULT_WORKSPACE = "mambaseg_workspace"
RUN_NAME_SEPARATOR = "__"
FOLD_PREFIX = "fold_"
FOLD_ALL = "all"
CHECKPOINT_KINDS = ("final", "best", "latest")
EXPORTED_MODELS = "exported_models"
SHARED_PREPROCESSING = {"3d_cascade_fullres": "3d_fullres"}
"""Configurations preprocessed exactly as another one (same spacing and normalisation), sharing its folder."""


class LayoutError(ValueError):
    """A path that is not what the workspace layout says it should be; the message names it."""


LOCK_FILE = ".mambaseg.lock"


def folder_lock(folder: Path) -> Path:
    """The lock file of a folder that one command writes at a time (``mambaseg.io.locks.owned``): inside it."""
    return Path(folder) / LOCK_FILE


def file_lock(file: Path) -> Path:
    """The lock file of a file that one command writes at a time: beside it, ``.NAME.mambaseg.lock``."""
    file = Path(file)
    return file.with_name(f".{file.name}{LOCK_FILE}")


def resolve_workspace(value: str | os.PathLike | None) -> Workspace:
    """The given folder, else ``$MAMBASEG_WORKSPACE``, else ``./mambaseg_workspace``; resolved once, at the entry point.

    Raises:
        LayoutError: the folder exists and is not a directory.
    """
    root = Path(value or os.environ.get(WORKSPACE_ENV) or DEFAULT_WORKSPACE).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise LayoutError(f"workspace {root}: exists and is not a folder")
    return Workspace(root)


@dataclass(frozen=True)
class RunLogFiles:
    """The log files of a training or pretraining run folder."""

    metrics: Path
    plot: Path
    log: Path

    @classmethod
    def in_folder(cls, folder: Path) -> RunLogFiles:
        return cls(folder / "metrics.csv", folder / "progress.png", folder / "training.log")


@dataclass(frozen=True)
class EvaluationFiles:
    """What scoring masks writes: the summary (JSON) and the scores per case and label (CSV)."""

    summary: Path
    table: Path

    @classmethod
    def in_folder(cls, folder: Path) -> EvaluationFiles:
        return cls(folder / "summary.json", folder / "metrics.csv")


PROBABILITIES_ENDING = ".npz"
SIDECAR_ENDING = ".json"
MASK_ENDING = ".nii.gz"


@dataclass(frozen=True)
class PredictionFolder:
    """A folder of predictions: ``CASE.npz`` (probabilities) beside ``CASE.json`` (``predict --save-probabilities``)
    or beside the mask ``CASE<ending>`` (a fold's ``validation/``)."""

    folder: Path

    def probability_cases(self) -> list[str]:
        """The cases with saved probabilities, by name."""
        return sorted(path.name[: -len(PROBABILITIES_ENDING)] for path in self.folder.glob(f"*{PROBABILITIES_ENDING}"))

    def probabilities(self, case: str) -> Path:
        return self.folder / f"{case}{PROBABILITIES_ENDING}"

    def sidecar(self, case: str) -> Path:
        return self.folder / f"{case}{SIDECAR_ENDING}"

    def mask(self, case: str) -> Path | None:
        """The existing mask file of ``case`` (any image ending), None when there is none."""
        for path in sorted(self.folder.glob(f"{case}.*")):
            stem, ending = split_file_ending(path.name)
            if stem == case and ending not in (PROBABILITIES_ENDING, SIDECAR_ENDING) and path.is_file():
                return path
        return None

    def geometry_source(self, case: str) -> Path | None:
        """What gives the grid of ``case``'s probabilities: its sidecar, else its mask; None when neither exists."""
        sidecar = self.sidecar(case)
        return sidecar if sidecar.is_file() else self.mask(case)

    def output_mask(self, case: str) -> Path:
        """Where a mask of ``case`` is written (NIfTI, as ``predict`` writes them)."""
        return self.folder / f"{case}{MASK_ENDING}"


@dataclass(frozen=True)
class CheckpointFiles:
    """The three checkpoints of a run folder: ``latest`` (periodic), ``best`` (pseudo Dice EMA), ``final``."""

    latest: Path
    best: Path
    final: Path

    @classmethod
    def in_folder(cls, folder: Path) -> CheckpointFiles:
        return cls(*(folder / f"checkpoint_{kind}.pt" for kind in ("latest", "best", "final")))

    def get(self, kind: str) -> Path:
        """The checkpoint ``kind`` (final, best or latest)."""
        if kind not in CHECKPOINT_KINDS:
            raise LayoutError(f"checkpoint {kind!r} is not one of {', '.join(CHECKPOINT_KINDS)}")
        return getattr(self, kind)


@dataclass(frozen=True)
class RunFolderFiles:
    """What every training or pretraining run folder holds: its resolved config, checkpoints and logs."""

    folder: Path

    @property
    def config(self) -> Path:
        return self.folder / "config.yaml"

    @property
    def checkpoints(self) -> CheckpointFiles:
        return CheckpointFiles.in_folder(self.folder)

    @property
    def logs(self) -> RunLogFiles:
        return RunLogFiles.in_folder(self.folder)


@dataclass(frozen=True)
class FoldFiles(RunFolderFiles):
    """``runs/CONFIGURATION__NETWORK/fold_K``: one trained fold."""

    fold: str

    @property
    def plan(self) -> Path:
        return self.folder / "plan.json"

    @property
    def validation(self) -> Path:
        """The folder of the validation cases' masks and ``summary.json``."""
        return self.folder / "validation"

    @property
    def validation_scores(self) -> EvaluationFiles:
        """The validation's summary and per-case scores, in evaluate's schema."""
        return EvaluationFiles.in_folder(self.validation)

    @property
    def validation_summary(self) -> Path:
        return self.validation_scores.summary

    @property
    def validation_times(self) -> Path:
        """``prediction_times.json``: the seconds each validation case took to predict, and on what device."""
        return self.validation / "prediction_times.json"

    @property
    def report(self) -> Path:
        """``report.html``: the fold's plan, training curves, validation scores and overlays, in one page."""
        return self.folder / "report.html"

    def validation_mask(self, case: str, file_ending: str) -> Path:
        return self.validation / f"{case}{file_ending}"

    def validation_probabilities(self, case: str) -> Path:
        return PredictionFolder(self.validation).probabilities(case)

    @classmethod
    def parse(cls, folder: str | os.PathLike) -> FoldFiles:
        """The fold of an existing folder named ``fold_K`` (``K`` a number or ``all``).

        Raises:
            LayoutError: no such folder, or its name is not a fold's.
        """
        folder = Path(folder).expanduser()
        fold = folder.name.removeprefix(FOLD_PREFIX)
        if not folder.is_dir():
            raise LayoutError(f"{folder}: no such fold folder")
        if not folder.name.startswith(FOLD_PREFIX) or not (fold.isdigit() or fold == FOLD_ALL):
            raise LayoutError(f"{folder}: not a fold folder named {FOLD_PREFIX}K (K a number or {FOLD_ALL!r})")
        return cls(folder, fold)

    def next_stage(self, configuration: str) -> Path:
        """The folder of this fold's validation masks on the preprocessed grid of ``configuration`` (a cascade)."""
        return self.folder / "predicted_next_stage" / configuration

    def next_stage_files(self, configuration: str, case: str) -> tuple[Path, Path]:
        """``CASE.npz`` (the mask, ``seg`` (1, *case)) and ``CASE.json`` (what it was made from) of a case."""
        folder = self.next_stage(configuration)
        return folder / f"{case}.npz", folder / f"{case}.json"

    @property
    def is_numbered(self) -> bool:
        """A cross-validation fold (``fold_all`` trains on every case and validates nothing held out)."""
        return self.fold.isdigit()


@dataclass(frozen=True)
class RunFiles:
    """``runs/CONFIGURATION__NETWORK``: the folds of one configuration and network."""

    folder: Path
    configuration: str
    network: str

    @property
    def name(self) -> str:
        return self.folder.name

    @classmethod
    def parse(cls, folder: str | os.PathLike) -> RunFiles:
        """The run of an existing folder named ``CONFIGURATION__NETWORK``.

        Raises:
            LayoutError: no such folder, or its name is not a run's.
        """
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise LayoutError(f"{folder}: no such run folder")
        configuration, separator, network = folder.name.partition(RUN_NAME_SEPARATOR)
        if not separator or not configuration or not network:
            hint = " (a fold folder: pass its parent)" if folder.name.startswith(FOLD_PREFIX) else ""
            raise LayoutError(f"{folder}: not a run folder named CONFIGURATION{RUN_NAME_SEPARATOR}NETWORK{hint}")
        return cls(folder, configuration, network)

    def fold(self, fold: str | int) -> FoldFiles:
        fold = str(fold)
        if not (fold.isdigit() or fold == FOLD_ALL):
            raise LayoutError(f"fold {fold!r}: a fold is a number or {FOLD_ALL!r}")
        return FoldFiles(self.folder / f"{FOLD_PREFIX}{fold}", fold)

    def folds(self) -> list[FoldFiles]:
        """The fold folders that exist, numbered ones in order, then ``all``."""
        found = []
        for path in self.folder.glob(f"{FOLD_PREFIX}*"):
            name = path.name.removeprefix(FOLD_PREFIX)
            if path.is_dir() and (name.isdigit() or name == FOLD_ALL):
                found.append(FoldFiles(path, name))
        return sorted(found, key=lambda f: (not f.is_numbered, int(f.fold) if f.is_numbered else 0))


@dataclass(frozen=True)
class DatasetFiles:
    """``WORKSPACE/DATASET``: what the pipeline writes for one dataset."""

    folder: Path

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def fingerprint(self) -> Path:
        return self.folder / "fingerprint.json"

    @property
    def plans(self) -> Path:
        return self.folder / "plans.json"

    @property
    def splits(self) -> Path:
        return self.folder / "splits.json"

    @property
    def instructions(self) -> Path:
        """``inference_instructions.json``, written by find-best, followed by ``predict -d``."""
        return self.folder / "inference_instructions.json"

    @property
    def report(self) -> Path:
        """``report.html``: what find-best ranked and chose, in one page."""
        return self.folder / "report.html"

    @property
    def dataset_json(self) -> Path:
        """``dataset.json`` of an exported model: the dataset's labels and channel names (nnU-Net's keys)."""
        return self.folder / "dataset.json"

    def benchmark(self, name: str) -> BenchmarkFiles:
        """``benchmarks/NAME``: what ``mambaseg benchmark --name NAME`` writes."""
        if not name or name in (".", "..") or "/" in name or "\\" in name:
            raise LayoutError(f"benchmark name {name!r}: give a plain folder name")
        return BenchmarkFiles(self.folder / "benchmarks" / name)

    @property
    def demo_results(self) -> Path:
        """What ``mambaseg demo`` writes after training: predictions, their evaluation, overlay images."""
        return self.folder / "demo"

    def preprocessed(self, configuration: str) -> Path:
        return self.folder / "preprocessed" / SHARED_PREPROCESSING.get(configuration, configuration)

    @property
    def runs_folder(self) -> Path:
        return self.folder / "runs"

    def run(self, configuration: str, network: str) -> RunFiles:
        return RunFiles(self.runs_folder / f"{configuration}{RUN_NAME_SEPARATOR}{network}", configuration, network)

    def runs(self) -> list[RunFiles]:
        """The run folders that exist, by name."""
        if not self.runs_folder.is_dir():
            return []
        found = []
        for path in sorted(self.runs_folder.iterdir()):
            if path.is_dir() and RUN_NAME_SEPARATOR in path.name:
                found.append(RunFiles.parse(path))
        return found


@dataclass(frozen=True)
class BenchmarkFiles:
    """``DATASET/benchmarks/NAME``: a comparison of networks; its runs are the dataset's ordinary run folders."""

    folder: Path

    @property
    def results(self) -> Path:
        """``results.json``: every score, statistic and cost of the benchmark."""
        return self.folder / "results.json"

    @property
    def table(self) -> Path:
        """``results.csv``: one row per contestant, fold, case and class."""
        return self.folder / "results.csv"

    @property
    def markdown(self) -> Path:
        return self.folder / "report.md"

    @property
    def html(self) -> Path:
        return self.folder / "report.html"

    @property
    def boxplot(self) -> Path:
        return self.folder / "dice_per_case.png"

    def run_log(self, contestant: str, fold: str) -> Path:
        """The output of the command that trained ``contestant``'s fold ``fold`` for this benchmark."""
        return self.folder / "logs" / f"{contestant}{RUN_NAME_SEPARATOR}fold_{fold}.log"

    def measurement(self, contestant: str, fold: str) -> Path:
        """What the benchmark measured of that run from outside it (its process's peak memory)."""
        return self.folder / "measurements" / f"{contestant}{RUN_NAME_SEPARATOR}fold_{fold}.json"

    @property
    def nnunet(self) -> Path:
        """nnU-Net's own raw, preprocessed and results folders, when it is a contestant."""
        return self.folder / "nnunet"


@dataclass(frozen=True)
class PretrainingFiles(RunFolderFiles):
    """``pretraining/IMAGEFOLDER__NETWORK``: one classification pretraining run."""

    @property
    def encoder(self) -> Path:
        """``encoder.pt``: what ``network.pretrained=PATH`` starts a segmentation run from."""
        return self.folder / "encoder.pt"


@dataclass(frozen=True)
class ExportedModelFiles:
    """An exported model's files: a workspace of one dataset's runs, with ``manifest.json`` at its root."""

    folder: Path

    @property
    def manifest(self) -> Path:
        return self.folder / "manifest.json"

    @property
    def workspace(self) -> Workspace:
        """The folder as a workspace: its runs are found as in any workspace."""
        return Workspace(self.folder)

    def entry(self, path: Path) -> str:
        """The name of ``path`` (a file of this model) inside the zip: relative, with ``/``."""
        return Path(path).relative_to(self.folder).as_posix()


@dataclass(frozen=True)
class Workspace:
    """The workspace folder."""

    root: Path

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    def dataset_source(self, value: str | os.PathLike) -> Path:
        """``value`` where it exists, else the folder of that name under ``raw/`` where that exists."""
        path = Path(value).expanduser()
        candidate = self.raw / str(value)
        return candidate if not path.exists() and candidate.is_dir() else path

    def plans_source(self, value: str | os.PathLike) -> Path:
        """``value`` where it is a file (a ``plans.json``), else the ``plans.json`` of the dataset of that name."""
        path = Path(value).expanduser()
        return path if path.is_file() else self.dataset(str(value)).plans

    def dataset(self, name: str) -> DatasetFiles:
        return DatasetFiles(self.root / name)

    def relative(self, path: Path) -> str:
        """``path`` relative to the workspace, as files in it refer to each other."""
        return Path(path).resolve().relative_to(self.root).as_posix()

    @property
    def exported_models(self) -> Path:
        """Where ``predict`` extracts the exported models (zips) it is given."""
        return self.root / EXPORTED_MODELS

    def exported_model(self, archive: Path, digest: str) -> ExportedModelFiles:
        """The extracted copy of the model zip ``archive`` whose SHA-256 is ``digest``."""
        stem = Path(archive).name.removesuffix(".zip") or "model"
        return ExportedModelFiles(self.exported_models / f"{stem}-{digest[:16]}")

    def pretraining(self, image_folder: Path, network: str) -> PretrainingFiles:
        return PretrainingFiles(self.root / "pretraining" / f"{Path(image_folder).name}{RUN_NAME_SEPARATOR}{network}")
