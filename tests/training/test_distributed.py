"""DDP on the CPU: the trainer's step under two gloo processes, and how the run's batch is split over processes.

``test_two_process_step_equals_one_process_step`` checks the trainer's step alone on a toy network; the real
``train_fold`` under DDP, with its network, data and schedule, is ``test_ddp_train_fold.py``.
"""

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from omegaconf import OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mambaseg.training.losses import build_training_loss
from mambaseg.training.patches import PatchBatches
from mambaseg.training.run import per_process_batch
from mambaseg.training.trainer import LoopSettings, Trainer
from tests.processes import GLOO_TIMEOUT, leave_group, run_workers
from tests.training.preprocessed_cases import write_case

LABELS = {"background": 0, "a": 1, "b": 2}


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv3d(1, 4, 3, padding=1), nn.InstanceNorm3d(4, affine=True), nn.ReLU(), nn.Conv3d(4, 3, 1)
    )


def global_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    image = torch.randn(4, 1, 6, 6, 6, generator=g)
    label = torch.randint(0, 3, (4, 1, 6, 6, 6), generator=g)
    return {"image": image, "label": label}


def one_step(model: nn.Module, batch: dict[str, torch.Tensor]) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss = build_training_loss(LABELS, ignore_label=None, batch_dice=False, deep_supervision_scales=None)
    # float32: the step's arithmetic is compared to 1e-6, which bf16 autocast (on CPUs that have it) would not meet
    settings = LoopSettings(num_epochs=1, iterations_per_epoch=1, val_iterations=0, grad_clip=12.0, amp=False)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    trainer = Trainer(model, loss, optimizer, None, iter, iter, settings, torch.device("cpu"), scaler)
    trainer.train_step(batch)


def _worker(rank: int, store: str, result: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2, timeout=GLOO_TIMEOUT)
    model = DistributedDataParallel(make_model())
    batch = {k: v[2 * rank : 2 * rank + 2] for k, v in global_batch().items()}  # each rank: half the batch
    one_step(model, batch)
    if rank == 0:
        torch.save(model.module.state_dict(), result)
    leave_group()


def test_two_process_step_equals_one_process_step(tmp_path):
    result = tmp_path / "ddp.pt"
    run_workers(_worker, (str(tmp_path / "store"), str(result)))
    single = make_model()
    one_step(single, global_batch())
    ddp_state = torch.load(result, weights_only=True)
    for name, tensor in single.state_dict().items():
        torch.testing.assert_close(ddp_state[name], tensor, rtol=1e-5, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


def test_the_batch_size_is_the_global_batch_split_evenly_over_the_processes():
    assert per_process_batch(8, 1) == 8
    assert per_process_batch(8, 4) == 2
    assert per_process_batch(2, 2) == 1
    for batch_size, world in ((2, 8), (5, 2), (4, 3)):
        with pytest.raises(ValueError, match=rf"^batch_size {batch_size} does not split evenly over {world} processes"):
            per_process_batch(batch_size, world)


NNUNET_AUGMENTATION = Path(__file__).resolve().parents[2] / "configs" / "augmentation" / "nnunet.yaml"


@pytest.mark.parametrize("augmented", [False, True], ids=["none", "nnunet"])
@pytest.mark.parametrize("world", [2, 4])
def test_the_processes_parts_of_a_batch_make_up_the_batch_of_one_process(tmp_path, world, augmented):
    """Patches, foreground oversampling and augmentation of rank r are the samples one process draws at r's place."""
    write_case(tmp_path, "a", (12, 30, 28), (slice(2, 4), slice(20, 23), slice(5, 8)), seed=1)
    write_case(tmp_path, "b", (9, 14, 40), (slice(6, 8), slice(1, 3), slice(30, 33)), seed=2)
    augmentation = OmegaConf.to_container(OmegaConf.load(NNUNET_AUGMENTATION)) if augmented else None
    common = {"patch_size": (8, 8, 8), "seed": 7, "augmentation": augmentation, "mirror_axes": (0, 1, 2)}
    single = PatchBatches(tmp_path, ["a", "b"], batch_size=4, **common)
    parts = [
        PatchBatches(tmp_path, ["a", "b"], batch_size=4 // world, rank=r, world_size=world, **common)
        for r in range(world)
    ]
    for step in (0, 3):
        whole = single[step]
        assert (whole["label"][3] == 1).any()  # round(4 * 0.67) = 3: the last sample of the run's batch is forced
        for key in ("image", "label"):
            torch.testing.assert_close(torch.cat([part[step][key] for part in parts]), whole[key], rtol=0, atol=0)
