"""Mixed precision in training: bf16 autocast on CPUs with native bf16 (and only there), float32 scan and loss,
bf16 losses and gradients close to float32's, channels_last_3d giving float32's outputs."""

import pytest
import torch
from torch import nn

from mambaseg.networks import create
from mambaseg.ops import selective_scan
from mambaseg.training.losses import build_training_loss
from mambaseg.training.step import (
    amp_autocast,
    autocast_dtype,
    build_grad_scaler,
    float32_loss,
    precision_record,
    training_memory_format,
    uses_amp,
)
from mambaseg.training.trainer import LoopSettings, Trainer

CPU = torch.device("cpu")
LABELS = {"background": 0, "a": 1, "b": 2}


@pytest.fixture
def native_bf16(monkeypatch, request):
    """Pretend the CPU has (param True) or lacks (param False) bf16 instructions."""
    monkeypatch.setattr("mambaseg.nn.precision.cpu_has_native_bf16", lambda: request.param)
    return request.param


@pytest.mark.parametrize("native_bf16", [True, False], indirect=True)
@pytest.mark.parametrize("amp", [True, False])
def test_bf16_autocast_runs_exactly_when_the_cpu_has_it_and_amp_is_on(native_bf16, amp):
    on = native_bf16 and amp
    assert uses_amp(CPU, amp) is on
    assert autocast_dtype(CPU, amp) == (torch.bfloat16 if on else None)
    assert not build_grad_scaler(CPU, amp).is_enabled()  # bf16 keeps float32's range: never scaled
    with amp_autocast(CPU, amp):
        assert torch.is_autocast_enabled("cpu") is on
        assert nn.Linear(2, 2)(torch.ones(1, 2)).dtype == (torch.bfloat16 if on else torch.float32)
    assert training_memory_format(CPU, amp, 3) == (torch.channels_last_3d if on else torch.contiguous_format)
    assert training_memory_format(CPU, amp, 2) == torch.contiguous_format
    expected = {"autocast": "bfloat16" if on else None, "device": "cpu"}
    assert precision_record(CPU, amp, 3) == {**expected, "memory_format": "channels_last_3d" if on else "contiguous"}


@pytest.mark.parametrize("native_bf16", [True], indirect=True)
def test_cuda_keeps_float16_with_a_scaler(native_bf16):
    cuda = torch.device("cuda")
    assert autocast_dtype(cuda, True) == torch.float16 and autocast_dtype(cuda, False) is None
    assert training_memory_format(cuda, True, 3) == torch.contiguous_format


def _scan_inputs():
    torch.manual_seed(0)
    b, d, n, length = 2, 4, 3, 50
    u, delta = torch.randn(b, d, length), torch.rand(b, d, length)
    A = -torch.rand(d, n) - 0.5
    return u, delta, A, torch.randn(b, n, length), torch.randn(b, n, length), torch.randn(d)


@pytest.mark.parametrize("native_bf16", [True], indirect=True)
def test_the_scan_runs_in_float32_inside_bf16_autocast(native_bf16):
    u, delta, A, B, C, D = _scan_inputs()
    expected = selective_scan(u, delta, A, B, C, D, backend="reference")
    with amp_autocast(CPU, amp=True):
        assert torch.is_autocast_enabled("cpu")
        out = selective_scan(u, delta, A, B, C, D)
        reference = selective_scan(u, delta, A, B, C, D, backend="reference")
    assert out.dtype == reference.dtype == torch.float32
    # bf16 arithmetic would be off by ~1e-2 over 50 steps; float32 agrees to rounding
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(reference, expected, rtol=0, atol=0)


def test_float32_loss_casts_outputs_and_switches_autocast_off():
    seen = []

    def loss(output, target):
        seen.append((output[0].dtype, output[1].dtype, torch.is_autocast_enabled("cpu")))
        return output[0].sum() + output[1].sum()

    output = [torch.ones(2, dtype=torch.bfloat16), torch.full((3,), 0.5, dtype=torch.bfloat16)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = float32_loss(loss, output, torch.zeros(1))
    assert seen == [(torch.float32, torch.float32, False)]
    assert value.dtype == torch.float32 and value.item() == 3.5


def _tiny(name="umamba_bot"):
    torch.manual_seed(0)
    net = create(name, 3, 1, 3, tiny=True, deep_supervision=True)
    divisor = net.input_size_divisor
    x = torch.randn(2, 1, 2 * divisor, divisor, divisor)
    y = torch.randint(0, 3, (2, 1, *x.shape[2:]))
    return net, x, y


def _loss_and_grads(net, x, y, amp, memory_format=torch.contiguous_format):
    loss_fn = build_training_loss(LABELS, None, False, [1.0, 0.5, 0.25, 0.125][: len(net(x))])
    net = net.to(memory_format=memory_format)
    net.zero_grad()
    with amp_autocast(CPU, amp):
        loss = float32_loss(loss_fn, net(x.contiguous(memory_format=memory_format)), y)
    loss.backward()
    return loss.detach(), torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])


@pytest.mark.parametrize("native_bf16", [True], indirect=True)
@pytest.mark.parametrize("name", ["umamba_bot", "unet_resenc"])
def test_bf16_loss_and_gradients_are_close_to_float32s(native_bf16, name):
    net, x, y = _tiny(name)
    loss32, grad32 = _loss_and_grads(net, x, y, amp=False)
    loss16, grad16 = _loss_and_grads(net, x, y, amp=True, memory_format=training_memory_format(CPU, True, 3))
    assert loss16.dtype == torch.float32
    assert loss16.item() == pytest.approx(loss32.item(), rel=2e-2)
    cosine = torch.nn.functional.cosine_similarity(grad16, grad32, dim=0).item()
    assert cosine > 0.99
    assert (grad16.norm() / grad32.norm()).item() == pytest.approx(1.0, rel=5e-2)


def test_channels_last_3d_gives_the_same_outputs_and_gradients():
    net, x, y = _tiny()
    loss, grads = _loss_and_grads(net, x, y, amp=False)
    loss_cl, grads_cl = _loss_and_grads(net, x, y, amp=False, memory_format=torch.channels_last_3d)
    assert any(p.dim() == 5 and p.is_contiguous(memory_format=torch.channels_last_3d) for p in net.parameters())
    torch.testing.assert_close(loss_cl, loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads_cl, grads, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("native_bf16", [True], indirect=True)
def test_the_trainer_steps_in_bf16_with_channels_last_batches(native_bf16):
    net, x, y = _tiny()
    memory_format = training_memory_format(CPU, True, 3)
    net = net.to(memory_format=memory_format)
    loss_fn = build_training_loss(LABELS, None, False, [1.0, 0.5, 0.25, 0.125][: len(net(x))])
    seen = []
    net.register_forward_pre_hook(lambda _, args: seen.append(args[0].is_contiguous(memory_format=memory_format)))
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-2)
    trainer = Trainer(
        net,
        loss_fn,
        optimizer,
        None,
        None,
        None,
        LoopSettings(1, 1, 1),
        CPU,
        build_grad_scaler(CPU, True),
        memory_format=memory_format,
    )
    before = [p.detach().clone() for p in net.parameters()]
    loss = trainer.train_step({"image": x, "label": y})
    val_loss, counts = trainer.validation_step({"image": x, "label": y})
    assert seen == [True, True] and all(p.dtype == torch.float32 for p in net.parameters())
    assert any(not torch.equal(a, p) for a, p in zip(before, net.parameters(), strict=True))
    assert 0 < loss < 10 and 0 < val_loss < 10 and counts.shape == (3, 2)
