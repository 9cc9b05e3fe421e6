"""A network registered from outside the package (one entry, nothing else) goes through plan, train and predict."""

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from mambaseg.cli.main import main
from mambaseg.io import read_image
from mambaseg.networks import create, list_networks
from mambaseg.networks.registry import (
    Footprint,
    NetworkEntry,
    TopologyChoice,
    check_input_size,
    network_entry,
    registered,
)
from mambaseg.planning.checkpoint import load_checkpoint
from tests.data.synthetic import write_nnunet_dataset

TOY = "toy_convnet"
STRIDE = 4
WIDTH = 3


class ToyConvNet(nn.Module):
    """A strided conv, a conv, a transposed conv back to full size, and a 1x1 head on it and the input."""

    def __init__(
        self, spatial_dims: int, in_channels: int, num_classes: int, width: int = WIDTH, deep_supervision: bool = False
    ) -> None:
        super().__init__()
        conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        up = nn.ConvTranspose3d if spatial_dims == 3 else nn.ConvTranspose2d
        self.down = conv(in_channels, width, STRIDE, stride=STRIDE)
        self.mid = conv(width, width, 3, padding=1)
        self.up = up(width, width, STRIDE, stride=STRIDE)
        self.head = conv(width + in_channels, num_classes, 1)
        self.input_size_divisor = STRIDE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(TOY, x.shape[2:])
        y = self.up(torch.relu(self.mid(torch.relu(self.down(x)))))  # (b, width, *spatial)
        return self.head(torch.cat([y, x], dim=1))  # (b, k, *spatial)


def toy_topology(spacing: Sequence[float], patch_size: Sequence[int]) -> TopologyChoice:
    divisors = (STRIDE,) * len(spacing)
    padded = [math.ceil(p / STRIDE) * STRIDE for p in patch_size]
    return TopologyChoice({"width": WIDTH}, padded, divisors)


def toy_memory(
    spatial_dims: int, in_channels: int, num_classes: int, kwargs: Mapping[str, Any], patch_size: Sequence[int]
) -> Footprint:
    with torch.device("meta"):
        parameters = sum(p.numel() for p in ToyConvNet(spatial_dims, in_channels, num_classes, **kwargs).parameters())
    per_voxel = 3 * kwargs["width"] + in_channels + num_classes  # full-resolution maps kept for backward
    return Footprint(parameters, 4.0 * per_voxel * math.prod(patch_size))


ENTRY = NetworkEntry(
    name=TOY,
    builder=ToyConvNet,
    topology=toy_topology,
    memory=toy_memory,
    optimizer="adamw_vmunet",
    min_input_size=lambda spatial_dims: (2 * STRIDE,) * spatial_dims,
    tiny={"width": 2},
)
SHORT = ["trainer=cpu_short", "trainer.num_epochs=1", "trainer.iterations_per_epoch=2", "trainer.val_iterations=1"]
SHORT += ["trainer.optimizers.adamw_vmunet.scheduler.warmup_steps=0"]  # one epoch leaves no room for a warm-up


@pytest.fixture
def toy():
    with registered(ENTRY) as entry:
        yield entry
    assert TOY not in list_networks()


def test_the_entry_is_registered_only_inside_the_block(toy):
    assert network_entry(TOY) is toy
    net = create(TOY, 2, 1, 2, tiny=True)
    assert net.registry_name == TOY and net.mid.out_channels == 2
    assert net(torch.zeros(1, 1, 8, 12)).shape == (1, 2, 8, 12)
    with pytest.raises(ValueError, match=r"toy_convnet: .* \(4, 12\) is smaller than its minimum input size \(8, 8\)"):
        net(torch.zeros(1, 1, 4, 12))
    with pytest.raises(ValueError, match="registered twice"), registered(ENTRY):
        pass


@pytest.mark.slow
def test_plan_train_and_predict_with_a_registered_toy_network(toy, tmp_path):
    dataset = write_nnunet_dataset(
        tmp_path / "Dataset001_Tiny", n_cases=5, n_test=1, shape=(6, 13, 12), spacing=(1, 1, 1)
    )
    workspace = tmp_path / "ws"
    assert main(["plan", str(dataset), "--workspace", str(workspace), "--network", TOY]) == 0
    plans = json.loads((workspace / "Synthetic" / "plans.json").read_text())
    fullres = plans["configurations"]["3d_fullres"]
    assert {cfg["network"] for cfg in plans["configurations"].values()} == {TOY}
    assert fullres["network_kwargs"] == {"width": WIDTH}
    assert fullres["patch_size"] == [8, 16, 12]  # the median shape, raised to the minimum size and padded to 4

    train = ["train", str(dataset), "--workspace", str(workspace), "-c", "3d_fullres", "-f", "0", "num_workers=0"]
    assert main([*train, *SHORT]) == 0
    run = workspace / "Synthetic" / "runs" / f"3d_fullres__{TOY}"
    checkpoint = load_checkpoint(run / "fold_0" / "checkpoint_final.pt")
    assert checkpoint.plans["configurations"]["3d_fullres"]["network"] == TOY
    assert "mid.weight" in checkpoint.model
    assert "betas" in checkpoint.optimizer["param_groups"][0]  # the entry's preset, adamw_vmunet

    out = tmp_path / "out"
    assert main(["predict", "-i", str(dataset / "imagesTs"), "-o", str(out), "-m", str(run), "--device", "cpu"]) == 0
    mask, source = read_image(out / "case_005.nii.gz"), read_image(dataset / "imagesTs" / "case_005_0000.nii.gz")
    assert mask.array.shape == source.array.shape == (6, 13, 12)
    assert mask.same_geometry(source, tol=1e-6) and set(np.unique(mask.array)) <= {0, 1}
