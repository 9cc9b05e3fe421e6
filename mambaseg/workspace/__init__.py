"""The workspace: every path and file name of it (``layout``), and the pipeline as a Python API.

Each stage takes the dataset (a folder, a name under ``WORKSPACE/raw``, or a ``Dataset``) and the workspace
folder, and returns what it made; the ``mambaseg`` command is a shell over these functions::

    from mambaseg import workspace as ms

    ms.plan("Task04_Hippocampus", "my_workspace")
    result = ms.train("Task04_Hippocampus", "my_workspace", "3d_fullres", fold=0)
    ms.find_best("Task04_Hippocampus", "my_workspace")  # each fold and the dataset have a report.html now
    ms.report(result.fold.folder)  # draw the fold's report.html again
    ms.predict("scans/", "masks/", dataset="Hippocampus", workspace="my_workspace")
    ms.benchmark("Task04_Hippocampus", "my_workspace", networks=["umamba_bot"], iterations=150)
"""

from mambaseg.workspace.benchmark import BenchmarkResult, benchmark
from mambaseg.workspace.export import export_model
from mambaseg.workspace.layout import Workspace, resolve_workspace
from mambaseg.workspace.prediction import ensemble, evaluate, find_best, predict
from mambaseg.workspace.predictor import Predictor
from mambaseg.workspace.preparation import DatasetCheckError, check, fingerprint, plan, preprocess
from mambaseg.workspace.pretraining import pretrain
from mambaseg.workspace.reports import report
from mambaseg.workspace.training import TrainResult, train

__all__ = [
    "BenchmarkResult",
    "DatasetCheckError",
    "Predictor",
    "TrainResult",
    "Workspace",
    "benchmark",
    "check",
    "ensemble",
    "evaluate",
    "export_model",
    "find_best",
    "fingerprint",
    "plan",
    "predict",
    "preprocess",
    "pretrain",
    "report",
    "resolve_workspace",
    "train",
]
