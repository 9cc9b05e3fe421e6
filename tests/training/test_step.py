"""The one optimisation step of training and pretraining: gradient clipping, grad-scaler skips, AMP switches."""

import math

import pytest
import torch
from torch import nn

from mambaseg.training.step import amp_autocast, build_grad_scaler, optimizer_step, uses_amp

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def cpu_without_bf16(monkeypatch):
    """Plain float32 steps whatever this machine's CPU: bf16 is switched on by ``tests/training/test_precision.py``."""
    monkeypatch.setattr("mambaseg.nn.precision.cpu_has_native_bf16", lambda: False)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(4, 1)


def _params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()]).clone()


def _step(model, scaler, grad_clip, scale=1.0):
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    x = torch.full((2, 4), 10.0)
    return optimizer_step(
        lambda: model(x).sum() * scale, model, optimizer, scaler, device=CPU, amp=True, grad_clip=grad_clip
    )


def test_plain_step_moves_by_the_gradient_and_returns_the_loss():
    model = _model()
    before = _params(model)
    expected_loss = model(torch.full((2, 4), 10.0)).sum().item()
    loss = _step(model, build_grad_scaler(CPU, amp=True), grad_clip=None)
    assert loss == pytest.approx(expected_loss)
    # d(sum of 2 outputs)/d(weight) = 2 * 10 per weight, /d(bias) = 2; SGD with lr 1 subtracts it
    assert torch.allclose(before - _params(model), torch.tensor([20.0, 20.0, 20.0, 20.0, 2.0]))


@pytest.mark.parametrize("scaler_enabled", [False, True])
def test_clipping_bounds_the_norm_of_the_true_gradient(scaler_enabled):
    model = _model()
    before = _params(model)
    scaler = torch.amp.GradScaler("cpu", enabled=scaler_enabled, init_scale=1024.0)
    _step(model, scaler, grad_clip=0.5)
    update = before - _params(model)
    assert update.norm().item() == pytest.approx(0.5, rel=1e-5)  # unscaled before clipping, whatever the scale
    full = torch.tensor([20.0, 20.0, 20.0, 20.0, 2.0])
    assert torch.allclose(update, full / full.norm() * 0.5, atol=1e-6)  # same direction as the full gradient


def test_a_small_gradient_is_not_clipped():
    model = _model()
    before = _params(model)
    _step(model, build_grad_scaler(CPU, amp=False), grad_clip=100.0)
    assert torch.allclose(before - _params(model), torch.tensor([20.0, 20.0, 20.0, 20.0, 2.0]))


@pytest.mark.parametrize("grad_clip", [None, 1.0])
def test_inf_gradients_skip_the_step_and_lower_the_scale(grad_clip):
    model = _model()
    before = _params(model)
    scaler = torch.amp.GradScaler("cpu", enabled=True, init_scale=1024.0)
    loss = _step(model, scaler, grad_clip, scale=math.inf)
    assert math.isinf(loss)
    assert torch.equal(_params(model), before)  # weights untouched
    assert scaler.get_scale() == 512.0
    _step(model, scaler, grad_clip)  # the next finite step goes through
    assert not torch.equal(_params(model), before)


def test_amp_on_a_cpu_without_native_bf16_is_float32():
    assert uses_amp(torch.device("cuda"), True) and not uses_amp(torch.device("cuda"), False)
    assert not uses_amp(CPU, True)
    assert not build_grad_scaler(CPU, amp=True).is_enabled()
    with amp_autocast(CPU, amp=True):
        assert not torch.is_autocast_enabled("cpu")
        assert nn.Linear(2, 2)(torch.ones(1, 2)).dtype == torch.float32
