"""Optimisers, parameter groups, learning-rate schedules and the per-network presets in configs/trainer."""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn

from mambaseg.networks.registry import list_networks
from mambaseg.training.optim import build_optimization, build_optimizer, build_scheduler, optimizer_config_for

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
        self.decoder = nn.Linear(4, 2)
        self.A_log = nn.Parameter(torch.zeros(4, 3))
        self.A_log._no_weight_decay = True


def _group_of(optimizer: torch.optim.Optimizer, param: nn.Parameter) -> dict:
    return next(g for g in optimizer.param_groups if any(p is param for p in g["params"]))


def _trainer_cfg(name: str):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        return compose(config_name=None, overrides=[f"+trainer={name}"]).trainer


def test_adamw_excludes_flagged_and_1d_params_from_weight_decay():
    model = TinyNet()
    optimizer = build_optimizer("adamw", model, lr=1e-3, weight_decay=0.05)
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(model.encoder[0].weight), id(model.decoder.weight)}
    for param in (model.A_log, model.encoder[0].bias, model.encoder[1].weight, model.decoder.bias):
        assert _group_of(optimizer, param)["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


def test_sgd_has_nnunet_defaults_and_decays_everything():
    model = TinyNet()
    optimizer = build_optimizer("sgd", model)
    assert len(optimizer.param_groups) == 1
    group = optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (1e-2, 0.99, True, 3e-5)


def test_lr_multiplier_by_name_prefix():
    model = TinyNet()
    optimizer = build_optimizer("adamw", model, lr=1e-3, param_groups={"encoder.": 0.1, "encoder.1.": 0.0})
    assert _group_of(optimizer, model.encoder[0].weight)["lr"] == pytest.approx(1e-4)
    assert _group_of(optimizer, model.encoder[1].weight)["lr"] == 0.0
    assert _group_of(optimizer, model.decoder.weight)["lr"] == 1e-3
    with pytest.raises(ValueError, match="match no parameter"):
        build_optimizer("adamw", model, param_groups={"encodr.": 0.1})


def test_unknown_names_raise():
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer("lion", TinyNet())
    with pytest.raises(ValueError, match="unknown scheduler"):
        build_scheduler("step", build_optimizer("sgd", TinyNet()), 10)


def _lrs(scheduler: torch.optim.lr_scheduler.LRScheduler, steps: int) -> list[float]:
    lrs = []
    for _ in range(steps):
        lrs.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    return lrs


def test_poly_matches_nnunet_values():
    optimizer = build_optimizer("sgd", TinyNet(), lr=0.01)
    lrs = _lrs(build_scheduler("poly", optimizer, 1000), 1000)
    assert lrs[0] == pytest.approx(0.01)
    assert lrs[500] == pytest.approx(0.01 * 0.5**0.9) and lrs[500] == pytest.approx(0.0053588673)
    assert lrs[999] == pytest.approx(0.01 * 0.001**0.9) and lrs[999] == pytest.approx(1.99526231e-5)


def test_warmup_cosine_reaches_base_after_warmup_and_floor_at_last_step():
    model = TinyNet()
    optimizer = build_optimizer("adamw", model, lr=1e-3, param_groups={"encoder.": 0.5})
    lrs = _lrs(build_scheduler("warmup_cosine", optimizer, 100, warmup_steps=10, min_lr=1e-5), 100)
    assert lrs[0] == pytest.approx(1e-3 / 11)
    assert lrs[9] == pytest.approx(1e-3 * 10 / 11)
    assert lrs[10] == pytest.approx(1e-3)
    assert lrs[55] == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * 45 / 89))))
    assert lrs[99] == pytest.approx(1e-5)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert _group_of(optimizer, model.encoder[0].weight)["lr"] == pytest.approx(0.5e-5)


def test_warmup_longer_than_a_fifth_of_a_short_schedule_is_cut_and_the_schedule_still_decays():
    optimizer = build_optimizer("adamw", TinyNet(), lr=1e-3)
    scheduler = build_scheduler("warmup_cosine", optimizer, 10, warmup_steps=10, min_lr=1e-5)  # the demo's 10 epochs
    assert scheduler.warmup == 2
    lrs = _lrs(scheduler, 10)
    assert lrs[:3] == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3])
    assert lrs[9] == pytest.approx(1e-5)  # the last epoch at the floor
    shortened = build_scheduler("warmup_cosine", build_optimizer("adamw", TinyNet(), lr=1e-3), 1000, warmup_steps=10)
    assert shortened.warmup == 10
    shortened.total_steps = 4  # what a time budget does after the first epoch
    assert shortened.warmup == 0 and shortened.factor(3) == pytest.approx(0.0)


def test_scheduler_state_is_plain_and_resumes():
    optimizer = build_optimizer("adamw", TinyNet(), lr=1e-3)
    scheduler = build_scheduler("warmup_cosine", optimizer, 20, warmup_steps=3, min_lr=1e-6)
    _lrs(scheduler, 7)
    state = scheduler.state_dict()
    assert all(isinstance(v, int | float | bool | list | type(None)) for v in state.values())
    fresh = build_optimizer("adamw", TinyNet(), lr=1e-3)
    resumed = build_scheduler("warmup_cosine", fresh, 20, warmup_steps=3, min_lr=1e-6)
    fresh.load_state_dict(optimizer.state_dict())
    resumed.load_state_dict(state)
    assert _lrs(resumed, 5) == _lrs(scheduler, 5)


@pytest.mark.parametrize("trainer", ["default", "cpu_short"])
def test_every_network_has_a_preset(trainer):
    cfg = _trainer_cfg(trainer)
    expected = {"unet_resenc": "sgd_poly", "umamba_bot": "sgd_poly", "umamba_enc": "sgd_poly"}
    expected |= {"segmamba": "sgd_poly", "swin_umamba": "adamw_swin_umamba", "swin_umamba_d": "adamw_swin_umamba"}
    expected |= {"vmunet": "adamw_vmunet", "umamba_bot_nomamba": "sgd_poly"}
    assert set(list_networks()) <= set(expected)
    for network in list_networks():
        chosen = optimizer_config_for(network, cfg)
        assert chosen["preset"] == expected[network]
        optimizer, scheduler = build_optimization(TinyNet(), chosen, cfg.num_epochs)
        assert isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler) and optimizer.param_groups


def test_trainer_configs():
    default, short = _trainer_cfg("default"), _trainer_cfg("cpu_short")
    assert (default.num_epochs, default.iterations_per_epoch, default.val_iterations) == (1000, 250, 50)
    assert default.grad_clip == 12
    assert (short.num_epochs, short.iterations_per_epoch, short.val_iterations) == (20, 50, 10)
    assert short.optimizers.adamw_vmunet.optimizer.lr == default.optimizers.adamw_vmunet.optimizer.lr
    assert optimizer_config_for("unet_resenc", {**default, "optimizer": "adamw_vmunet"})["preset"] == "adamw_vmunet"
    with pytest.raises(ValueError, match="no optimizer preset"):
        optimizer_config_for("transunet", default)
