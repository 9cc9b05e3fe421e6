"""Peak memory of `mambaseg predict` on a large volume stays within a few volumes of class probabilities.

The network is replaced by a cheap fixed function, so what is measured is the pipeline around it:
reading, preprocessing, the sliding window's accumulators, softmax, restoring to the input geometry,
the argmax and writing. The prediction runs in a fresh process whose peak resident memory is compared
with its peak before predicting.
"""

from __future__ import annotations

import multiprocessing
import resource
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mambaseg.io import Image, read_image, write_image
from mambaseg.planning.checkpoint import save_checkpoint
from mambaseg.planning.plans import ConfigurationPlan, Normalization, Plans
from mambaseg.training.setup import write_run_files
from mambaseg.workspace.layout import RunFiles

SHAPE = (100, 256, 256)
CLASSES = 10
PATCH = [32, 64, 64]


class RampNet(nn.Module):
    """Logits ``c * x`` for class c: cheap, and the argmax is the last class where x > 0, else background."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("slopes", torch.arange(num_classes, dtype=torch.float32).view(1, -1, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.slopes


def _write_run(run_dir: Path) -> None:
    ct = Normalization("ct", {"clip_low": -1000.0, "clip_high": 1000.0, "mean": 40.0, "std": 200.0})
    plan = ConfigurationPlan(3, [1.5, 0.8, 0.8], list(SHAPE), PATCH, 2, "unet_resenc", {}, [ct], 0.0)
    labels = {"background": 0, **{f"class {k}": k for k in range(1, CLASSES)}}
    plans = Plans("CT", {"0": "CT"}, labels, CLASSES, 8.0, [0, 1, 2], [0, 1, 2], {}, {"3d_fullres": plan})
    fold = RunFiles(run_dir, "3d_fullres", "unet_resenc").fold(0)
    write_run_files(fold, {}, plan)
    save_checkpoint(fold.checkpoints.final, model=nn.Identity(), epoch=0, plans=plans.to_dict())


def _predict_and_report_peaks(source: str, out: str, run: str, queue: multiprocessing.Queue) -> None:
    from mambaseg.cli.main import build_parser, main
    from mambaseg.inference import runs

    runs.load_model = lambda trained, checkpoint, device: RampNet(CLASSES)
    build_parser()  # imports every command's modules, so that what follows measures the prediction alone
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    status = main(["predict", "-i", source, "-o", out, "-m", run, "--device", "cpu", "--no-mirroring"])
    queue.put((status, before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))


@pytest.mark.slow
def test_peak_memory_is_bounded_by_a_few_probability_volumes(tmp_path):
    rng = np.random.default_rng(0)
    values = np.where(rng.random(SHAPE) < 0.5, -900, 300).astype(np.int16)
    write_image(
        Image(values, (0.8, 0.8, 1.5), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel())), tmp_path / "in" / "ct.nii.gz"
    )
    run = tmp_path / "ws" / "CT" / "runs" / "3d_fullres__unet_resenc"
    _write_run(run)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(
        target=_predict_and_report_peaks, args=(str(tmp_path / "in"), str(tmp_path / "out"), str(run), queue)
    )
    child.start()
    status, before_kib, peak_kib = queue.get(timeout=300)
    child.join()
    assert status == 0
    np.testing.assert_array_equal(
        read_image(tmp_path / "out" / "ct.nii.gz").array, np.where(values > 0, CLASSES - 1, 0)
    )
    probability_volume_mib = CLASSES * 4 * np.prod(SHAPE) / 2**20
    growth_mib = (peak_kib - before_kib) / 1024
    # about 1.45 volumes: the accumulated logits, and a tenth of it each for the window weights, the input and the
    # softmax; one more copy of the probabilities (as restoring made before it stopped copying) would be 2.45
    assert growth_mib < 1.75 * probability_volume_mib, f"peak grew by {growth_mib:.0f} MiB"
