"""Fine-tuning a segmentation network from ``encoder.pt``: loading, learning-rate groups, encoder freezing."""

import logging

import pytest
import torch
import torch.nn.functional as F

from mambaseg.networks import create
from mambaseg.pretraining.models import build_classifier, export_encoder
from mambaseg.training.fine_tuning import prepare_fine_tuning
from mambaseg.training.optim import build_optimizer, build_scheduler
from mambaseg.training.trainer import LoopSettings, Trainer


def batches(epoch):
    g = torch.Generator().manual_seed(epoch)
    while True:
        image = torch.randn(2, 1, 16, 16, generator=g)
        yield {"image": image, "label": (image > 0).long()}


def encoder_tensors(model):
    return {k: v.detach().clone() for k, v in model.named_parameters() if k.startswith("encoder.")}


def other_tensors(model):
    return {k: v.detach().clone() for k, v in model.named_parameters() if not k.startswith("encoder.")}


def changed(before, after):
    return any(not torch.equal(before[k], after[k]) for k in before)


def test_pretrained_encoder_loads_and_gets_its_learning_rate(tmp_path, caplog):
    path = export_encoder(build_classifier("vmunet", 3, 4, tiny=True), tmp_path / "encoder.pt", {})
    model = create("vmunet", 2, 1, 2, tiny=True)
    with caplog.at_level(logging.INFO, logger="mambaseg"):
        groups, hook = prepare_fine_tuning(model, {"pretrained": str(path), "encoder_lr_multiplier": 0.1})
    total = sum(k.startswith("encoder.") for k in model.state_dict())
    assert f"{total} of {total} encoder tensors loaded" in caplog.text
    assert groups == {"encoder.": 0.1} and hook is None
    optimizer = build_optimizer("adamw", model, lr=1e-3, param_groups=groups)
    assert sorted({g["lr"] for g in optimizer.param_groups}) == pytest.approx([1e-4, 1e-3])


def test_fine_tuning_options_need_an_encoder_and_an_existing_file(tmp_path):
    unet = create("unet_resenc", 2, 1, 2, tiny=True)
    with pytest.raises(ValueError, match="no VSS encoder"):
        prepare_fine_tuning(unet, {"pretrained": "encoder.pt"})
    with pytest.raises(ValueError, match="has no encoder"):
        prepare_fine_tuning(torch.nn.Conv2d(1, 2, 1), {"freeze_encoder_epochs": 2})
    assert prepare_fine_tuning(unet, {"pretrained": None, "freeze_encoder_epochs": 0}) == ({}, None)
    with pytest.raises(ValueError, match="no file"):
        prepare_fine_tuning(create("vmunet", 2, 1, 2, tiny=True), {"pretrained": str(tmp_path / "missing.pt")})


def test_encoder_stays_frozen_for_the_first_epochs_then_trains():
    torch.manual_seed(0)
    model = create("swin_umamba", 2, 1, 2, tiny=True)
    _, freeze = prepare_fine_tuning(model, {"freeze_encoder_epochs": 2})
    snapshots = []

    def on_epoch_start(epoch):
        snapshots.append((encoder_tensors(model), other_tensors(model)))
        freeze(epoch)

    optimizer = build_optimizer("adamw", model, lr=1e-2)
    trainer = Trainer(
        model,
        lambda output, label: F.cross_entropy(output, label[:, 0]),
        optimizer,
        build_scheduler("poly", optimizer, 4),
        batches,
        batches,
        LoopSettings(num_epochs=4, iterations_per_epoch=2, val_iterations=1, amp=False),
        torch.device("cpu"),
        torch.amp.GradScaler("cpu", enabled=False),
        on_epoch_start=on_epoch_start,
    )
    trainer.fit()
    final = (encoder_tensors(model), other_tensors(model))
    encoders, others = [s[0] for s in snapshots] + [final[0]], [s[1] for s in snapshots] + [final[1]]
    assert not changed(encoders[0], encoders[1]) and not changed(encoders[1], encoders[2])  # epochs 0 and 1
    assert changed(others[0], others[1]) and changed(others[1], others[2])  # the rest trains meanwhile
    assert changed(encoders[2], encoders[3]) and changed(encoders[3], encoders[4])  # epochs 2 and 3
    assert all(p.requires_grad for p in model.parameters())


def test_trainer_calls_the_hook_from_the_resumed_epoch():
    model = torch.nn.Conv2d(1, 2, 1)
    optimizer = build_optimizer("sgd", model, lr=0.1)
    seen = []
    Trainer(
        model,
        lambda output, label: F.cross_entropy(output, label[:, 0]),
        optimizer,
        build_scheduler("poly", optimizer, 3),
        batches,
        batches,
        LoopSettings(num_epochs=3, iterations_per_epoch=1, val_iterations=1, amp=False),
        torch.device("cpu"),
        torch.amp.GradScaler("cpu", enabled=False),
        on_epoch_start=seen.append,
    ).fit(start_epoch=1)
    assert seen == [1, 2]
