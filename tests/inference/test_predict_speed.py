"""`mambaseg predict --precision / --fast / --compile` on a tiny trained run, and reduced precision in the parts.

The run is trained by `mambaseg train` (unet_resenc, one short epoch); each option predicts its test
images through the CLI and is compared with the float32 eager prediction of the same images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mambaseg.cli.main import main
from mambaseg.inference import precision as precision_module
from mambaseg.inference.precision import resolve_precision
from mambaseg.inference.sliding_window import predict_logits
from mambaseg.io import read_image
from mambaseg.nn.precision import cpu_has_native_bf16
from mambaseg.ops import selective_scan
from tests.data.synthetic import write_nnunet_dataset

TRAIN = ["-c", "3d_fullres", "-n", "unet_resenc", "trainer=cpu_short", "trainer.num_epochs=1"]
TRAIN += ["trainer.iterations_per_epoch=2", "trainer.val_iterations=1", "num_workers=0"]
CASES = ["case_005.nii.gz", "case_006.nii.gz"]
CPU = torch.device("cpu")
native_bf16 = pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has no native bfloat16")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(run folder with fold 0, folder of 2 test images of 10 × 20 × 18 voxels, larger than the patch)."""
    root = tmp_path_factory.mktemp("predict_speed")
    dataset = write_nnunet_dataset(root / "Dataset001_Tiny", n_cases=5, n_test=2, shape=(10, 20, 18), spacing=(1, 1, 1))
    assert main(["train", str(dataset), "--workspace", str(root / "ws"), "-f", "0", *TRAIN]) == 0
    return root / "ws" / "Synthetic" / "runs" / "3d_fullres__unet_resenc", dataset / "imagesTs"


def predict(run: Path, images: Path, out: Path, *extra: str) -> int:
    command = ["predict", "-i", str(images), "-o", str(out), "-m", str(run), "--device", "cpu"]
    return main([*command, "--save-probabilities", *extra])


def outputs(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Case file name -> (mask, float32 probabilities)."""
    found = {}
    for name in CASES:
        probabilities = np.load(folder / name.replace(".nii.gz", ".npz"))["probabilities"].astype(np.float32)
        found[name] = (read_image(folder / name).array, probabilities)
    return found


@pytest.fixture(scope="module")
def float32_masks(trained, tmp_path_factory) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    run, images = trained
    out = tmp_path_factory.mktemp("float32")
    assert predict(run, images, out, "--precision", "float32") == 0
    return outputs(out)


@pytest.mark.slow
@native_bf16
def test_bfloat16_masks_agree_with_float32_on_nearly_all_voxels(trained, float32_masks, tmp_path):
    run, images = trained
    assert predict(run, images, tmp_path / "bf16", "--precision", "bfloat16") == 0
    assert predict(run, images, tmp_path / "auto") == 0  # auto is bfloat16 on this CPU
    bf16, auto = outputs(tmp_path / "bf16"), outputs(tmp_path / "auto")
    for name, (mask, probabilities) in float32_masks.items():
        source = read_image(images / name.replace(".nii.gz", "_0000.nii.gz"))
        assert read_image(tmp_path / "bf16" / name).same_geometry(source, tol=1e-6)
        assert (bf16[name][0] == mask).mean() >= 0.99
        np.testing.assert_allclose(bf16[name][1], probabilities, atol=0.05)  # bf16 keeps 8 bits of mantissa
        np.testing.assert_array_equal(auto[name][0], bf16[name][0])
        np.testing.assert_array_equal(auto[name][1], bf16[name][1])


@pytest.mark.slow
def test_fast_is_no_mirroring_with_step_three_quarters_and_keeps_the_geometry(trained, float32_masks, tmp_path):
    run, images = trained
    assert predict(run, images, tmp_path / "fast", "--fast", "--precision", "float32") == 0
    plain = ["--no-mirroring", "--step", "0.75", "--precision", "float32"]
    assert predict(run, images, tmp_path / "plain", *plain) == 0
    fast, same = outputs(tmp_path / "fast"), outputs(tmp_path / "plain")
    for name, (mask, _) in float32_masks.items():
        source = read_image(images / name.replace(".nii.gz", "_0000.nii.gz"))
        written = read_image(tmp_path / "fast" / name)
        assert written.same_geometry(source, tol=1e-6) and written.array.shape == mask.shape
        assert set(np.unique(written.array)) <= {0, 1}
        np.testing.assert_array_equal(fast[name][0], same[name][0])
        np.testing.assert_array_equal(fast[name][1], same[name][1])
    # --step wins over --fast's step: step 0.5 without mirroring differs from --fast's windows
    assert predict(run, images, tmp_path / "fast_half", "--fast", "--step", "0.5", "--precision", "float32") == 0
    assert predict(run, images, tmp_path / "half", "--no-mirroring", "--precision", "float32") == 0
    for name in CASES:
        np.testing.assert_array_equal(outputs(tmp_path / "fast_half")[name][1], outputs(tmp_path / "half")[name][1])


@pytest.mark.slow
def test_compiled_network_predicts_as_the_eager_one(trained, float32_masks, tmp_path):
    run, images = trained
    assert predict(run, images, tmp_path / "compiled", "--compile", "--precision", "float32") == 0
    compiled = outputs(tmp_path / "compiled")
    for name, (mask, probabilities) in float32_masks.items():
        np.testing.assert_allclose(compiled[name][1], probabilities, atol=2e-3)  # float16 files, reordered sums
        confident = np.abs(probabilities[1] - 0.5) > 1e-2
        np.testing.assert_array_equal(compiled[name][0][confident], mask[confident])


def _error(capsys) -> str:
    return " ".join(capsys.readouterr().out.split())


@pytest.mark.slow
def test_bad_values_and_precisions_the_cpu_lacks_are_refused(trained, tmp_path, capsys, monkeypatch):
    run, images = trained
    assert predict(run, images, tmp_path / "out", "--precision", "half") == 1
    assert "invalid choice: 'half'" in _error(capsys)
    assert predict(run, images, tmp_path / "out", "--fast", "--step", "0") == 1
    assert "--step 0.0: must be between 0.1 and 1" in _error(capsys)
    assert predict(run, images, tmp_path / "out", "--precision", "float16") == 1
    assert "--precision float16: float16 is not computed natively on cpu; use float32 (or auto)" in _error(capsys)
    monkeypatch.setattr(precision_module, "native_autocast_dtype", lambda device: None)  # a CPU without bf16
    assert predict(run, images, tmp_path / "out", "--precision", "bfloat16") == 1
    assert "--precision bfloat16: this CPU has no native bfloat16" in _error(capsys)
    assert not (tmp_path / "out").exists()


def test_auto_precision_follows_the_device(monkeypatch):
    monkeypatch.setattr(precision_module, "native_autocast_dtype", lambda device: torch.bfloat16)
    assert resolve_precision("auto", CPU) == torch.bfloat16
    assert resolve_precision("bfloat16", CPU) == torch.bfloat16
    assert resolve_precision("float32", CPU) is None
    monkeypatch.setattr(precision_module, "native_autocast_dtype", lambda device: None)
    assert resolve_precision("auto", CPU) is None
    with pytest.raises(ValueError, match="precision bf16: choose one of auto, float32, bfloat16, float16"):
        resolve_precision("bf16", CPU)


@native_bf16
def test_logits_under_autocast_are_float32_and_the_scan_computes_in_float32():
    torch.manual_seed(0)
    model = torch.nn.Conv3d(2, 3, 3, padding=1)
    patches = torch.randn(2, 2, 4, 6, 5)
    logits = predict_logits(model, patches, (0, 2), torch.bfloat16)  # (b, k, *patch)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, predict_logits(model, patches, (0, 2)), atol=0.05, rtol=0.05)
    b, d, n, length = 1, 4, 3, 64
    u, delta = torch.randn(b, d, length).bfloat16(), torch.rand(b, d, length).bfloat16()
    A, B, C = -torch.rand(d, n), torch.randn(b, n, length).bfloat16(), torch.randn(b, n, length).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, state = selective_scan(u, delta, A, B, C, return_last_state=True, backend="reference")
    expected, expected_state = selective_scan(
        u.float(), delta.float(), A, B.float(), C.float(), return_last_state=True, backend="reference"
    )
    assert out.dtype == torch.bfloat16 and state.dtype == torch.float32
    torch.testing.assert_close(state, expected_state)  # float32 states: the same sums as a float32 scan
    torch.testing.assert_close(out.float(), expected, atol=0, rtol=2**-8)  # only the output is rounded to bf16
