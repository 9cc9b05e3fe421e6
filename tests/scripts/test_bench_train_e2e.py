"""``scripts/bench_train_e2e.py``: the epoch ends read from both tools' text logs, and the throughput from them."""

import importlib.util
import sys
from datetime import datetime
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_train_e2e.py"
spec = importlib.util.spec_from_file_location("bench_train_e2e", SCRIPT)
bench = importlib.util.module_from_spec(spec)
sys.modules["bench_train_e2e"] = bench  # its dataclasses look their module up there
spec.loader.exec_module(bench)

# as mambaseg's training.log writes them (run_log.LogFile's format); a resumed run logs epoch 1 again
OURS = """2026-12-01 15:00:00,000 INFO mambaseg.workspace.training: training 3d_fullres__unet_resenc fold 0
2026-12-01 15:00:30,500 INFO mambaseg.training.run_log: epoch 0: train loss 0.9, pseudo Dice [0.1, 0.2], time 29.9 s
2026-12-01 15:00:31,000 INFO mambaseg.training.checkpoint: saved checkpoint_best.pt
2026-12-01 15:00:50,000 INFO mambaseg.training.run_log: epoch 1: train loss 0.8, time 19.0 s
2026-12-01 15:00:55,000 INFO mambaseg.workspace.training: resuming from checkpoint_latest.pt (epoch 1)
2026-12-01 15:01:00,500 INFO mambaseg.training.run_log: epoch 1: train loss 0.8, time 19.0 s
2026-12-01 15:01:20,500 INFO mambaseg.training.run_log: epoch 2: train loss 0.7, time 19.5 s (best)
2026-12-01 15:01:40,000 INFO mambaseg.workspace.training: validation of fold_0: mean Dice 0.5
"""

# as nnU-Net 2.8.1's print_to_log_file writes them (str(datetime): no fraction when the microsecond is 0)
NNUNET = """
#######################################################################
Please cite the following paper when using nnU-Net:
2026-12-01 15:10:00.250000: Epoch 0
2026-12-01 15:10:00.260000: Current learning rate: 0.01
2026-12-01 15:10:40.750000: train_loss -0.1
2026-12-01 15:10:40.760000: Pseudo dice [np.float32(0.1), np.float32(0.2)]
2026-12-01 15:10:40.770000: Epoch time: 40.5 s
2026-12-01 15:10:40.780000: Yayy! New best EMA pseudo Dice: 0.15
2026-12-01 15:10:41.000000: Epoch 1
2026-12-01 15:11:05: Epoch time: 24.0 s
2026-12-01 15:11:05.100000: Epoch 2
2026-12-01 15:11:30.770000: Epoch time: 25.67 s
"""


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_our_log_gives_each_epochs_last_logged_end():
    ends = bench.our_epoch_ends(OURS)
    assert ends == [
        _stamp("2026-12-01 15:00:30.500"),
        _stamp("2026-12-01 15:01:00.500"),
        _stamp("2026-12-01 15:01:20.500"),
    ]
    # 2 steady epochs of 20 iterations x batch 2 from 15:00:30.5 to 15:01:20.5: 80 samples in 50 s
    assert bench.steady_samples_per_second(ends, 20, 2) == pytest.approx(1.6)


def test_our_log_with_a_missing_epoch_is_refused():
    text = "\n".join(line for line in OURS.splitlines() if "epoch 1:" not in line)
    with pytest.raises(ValueError, match=r"epochs \[0, 2\] logged"):
        bench.our_epoch_ends(text)


def test_nnunet_log_gives_the_epoch_time_lines_in_order():
    ends = bench.nnunet_epoch_ends(NNUNET)
    assert ends == [_stamp("2026-12-01 15:10:40.770"), _stamp("2026-12-01 15:11:05"), _stamp("2026-12-01 15:11:30.770")]
    # 2 x 20 x 2 = 80 samples in 50 s
    assert bench.steady_samples_per_second(ends, 20, 2) == pytest.approx(1.6)


def test_one_epoch_has_no_steady_state():
    with pytest.raises(ValueError, match="at least 2"):
        bench.steady_samples_per_second([12.0], 20, 2)


def test_nnunet_dataset_name_from_the_decathlon_folder():
    assert bench.nnunet_dataset_name(Path("/data/Task04_Hippocampus")) == (4, "Dataset004_Hippocampus")
    with pytest.raises(ValueError, match="TaskNN_Name"):
        bench.nnunet_dataset_name(Path("/data/Hippocampus"))
