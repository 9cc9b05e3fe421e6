"""DDP with two gloo processes on the CPU: one training step equals one process with the same global batch."""

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mambaseg.training.losses import build_training_loss
from mambaseg.training.trainer import LoopSettings, Trainer
from tests.processes import run_workers

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
    settings = LoopSettings(num_epochs=1, iterations_per_epoch=1, val_iterations=0, grad_clip=12.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    trainer = Trainer(model, loss, optimizer, None, iter, iter, settings, torch.device("cpu"), scaler)
    trainer.train_step(batch)


def _worker(rank: int, store: str, result: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    model = DistributedDataParallel(make_model())
    batch = {k: v[2 * rank : 2 * rank + 2] for k, v in global_batch().items()}  # each rank: half the batch
    one_step(model, batch)
    if rank == 0:
        torch.save(model.module.state_dict(), result)
    dist.destroy_process_group()


def test_two_process_step_equals_one_process_step(tmp_path):
    result = tmp_path / "ddp.pt"
    run_workers(_worker, (str(tmp_path / "store"), str(result)))
    single = make_model()
    one_step(single, global_batch())
    ddp_state = torch.load(result, weights_only=True)
    for name, tensor in single.state_dict().items():
        torch.testing.assert_close(ddp_state[name], tensor, rtol=1e-5, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")
