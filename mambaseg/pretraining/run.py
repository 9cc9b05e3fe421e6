"""A classification pretraining run on an image folder: train, validate, checkpoint, export the encoder.

Dimension letters: b batch, c channels, h height, w width, k classes.

The config is the resolved ``configs/pretrain/default.yaml``. Every iteration mixes the batch (mixup /
cutmix with label smoothing), takes an AdamW step on the soft-target cross entropy, steps the warm-up +
cosine schedule and updates the EMA weights; every epoch reports validation loss, top-1 and top-5 (and of
the EMA weights). Segmentation training's ``EpochLoop`` runs these epochs (from the epoch a resumed checkpoint
says), logs them and writes ``checkpoint_latest.pt`` every ``checkpoint_every`` epochs. The run folder then
holds ``checkpoint_final.pt`` and ``encoder.pt``. Under DDP (torchrun) each process trains on its shard of the
images and only rank 0 writes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mambaseg.planning.checkpoint import Checkpoint, load_checkpoint
from mambaseg.pretraining.data import ImageDataset, epoch_loader, scan_split, shard
from mambaseg.pretraining.ema import ModelEma
from mambaseg.pretraining.models import build_classifier, encoder_settings, export_encoder
from mambaseg.pretraining.transforms import EvalTransform, MixupCutmix, TrainTransform, soft_cross_entropy
from mambaseg.training.checkpoint import restore_run, resume_checkpoint
from mambaseg.training.distributed import all_reduce_sums, rank_and_world
from mambaseg.training.files import RunPaths
from mambaseg.training.loop import CheckpointWriter, EpochLoop
from mambaseg.training.optim import build_optimizer, build_scheduler
from mambaseg.training.run_log import RunLog, epoch_progress, write_run_config
from mambaseg.training.step import amp_autocast, build_grad_scaler, float32_loss, optimizer_step

log = logging.getLogger(__name__)

REFERENCE_BATCH = 1024


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> list[int]:
    """How many of the (b, k) ``logits`` rank the true label among their top k, per k (k capped at the classes)."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices  # (b, max k)
    hits = top == labels[:, None]
    return [int(hits[:, :k].any(1).sum()) for k in ks]


def _channel_stats(values: Sequence[float], in_channels: int, what: str) -> list[float]:
    values = [float(v) for v in values]
    if len(values) == in_channels:
        return values
    if len(values) == 3 and in_channels == 1:
        return [sum(values) / 3]
    raise ValueError(f"data.{what} has {len(values)} values for model.in_channels={in_channels}")


@dataclass
class Parts:
    """What one process trains with."""

    model: nn.Module
    bare: nn.Module
    ema: ModelEma | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    grad_scaler: torch.amp.GradScaler
    mix: MixupCutmix


class PretrainingPaths(RunPaths, Protocol):
    """A pretraining run's files (the workspace layer's ``PretrainingFiles`` provides them)."""

    @property
    def encoder(self) -> Path: ...


class Pretraining:
    """One pretraining run, set up from the config; ``fit`` trains it to the end.

    Args:
        image_folder: the folder with ``train/`` and ``val/``.
        files: where rank 0 writes (the run's config, checkpoints, logs and exported encoder).
        network: a name from ``list_pretrain_models()``.
        config: the resolved pretraining config (plain dict).
        device: where to train.
    """

    def __init__(
        self, image_folder: Path, files: PretrainingPaths, network: str, config: Mapping[str, Any], device: torch.device
    ) -> None:
        self.rank, self.world = rank_and_world()
        self.image_folder, self.files, self.network = image_folder, files, network
        self.config, self.device = dict(config), device
        self.seed = int(config["seed"])
        data, model_cfg = config["data"], config["model"]
        self.in_channels = int(model_cfg["in_channels"])
        train_split = scan_split(image_folder, "train")
        val_split = scan_split(image_folder, "val", train_split.classes)
        self.classes = train_split.classes
        mean = _channel_stats(data["mean"], self.in_channels, "mean")
        std = _channel_stats(data["std"], self.in_channels, "std")
        size = int(data["image_size"])
        train_transform = TrainTransform(
            size,
            data["crop_scale"],
            data["crop_ratio"],
            data["hflip"],
            data["color_jitter"],
            mean,
            std,
            rand_augment=data.get("rand_augment"),
            random_erasing=float(data.get("random_erasing") or 0.0),
        )
        self.train_set = ImageDataset(train_split.samples, self.in_channels, train_transform, self.seed)
        val_transform = EvalTransform(size, data["val_crop_fraction"], mean, std)
        self.val_set = ImageDataset(val_split.samples, self.in_channels, val_transform, self.seed)
        self.batch_size = max(1, math.ceil(int(config["batch_size"]) / self.world))
        per_rank = len(shard(len(self.train_set), self.rank, self.world, 0, self.seed, shuffle=True))
        self.steps_per_epoch = per_rank // self.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"batch_size {config['batch_size']} exceeds the {len(self.train_set)} training images of {image_folder}"
            )
        self.epochs = int(config["epochs"])
        warmup = int(config["optimizer"]["warmup_epochs"])
        if not 0 <= warmup < self.epochs:
            raise ValueError(f"optimizer.warmup_epochs must be in [0, epochs={self.epochs}), got {warmup}")
        self.amp = bool(config["amp"])
        self.encoder = encoder_settings(network, bool(model_cfg["tiny"]), **dict(model_cfg["kwargs"] or {}))

    def build(self) -> Parts:
        """Model, EMA, optimiser (learning rate scaled by the global batch), per-iteration schedule, mixing."""
        torch.manual_seed(self.seed + self.rank)
        bare = build_classifier(self.network, self.in_channels, len(self.classes), **self.encoder).to(self.device)
        ema_cfg = self.config["ema"]
        ema = ModelEma(bare, float(ema_cfg["decay"])) if ema_cfg["enabled"] else None
        opt = self.config["optimizer"]
        scale = self.batch_size * self.world / REFERENCE_BATCH
        optimizer = build_optimizer(
            "adamw",
            bare,
            lr=float(opt["base_lr"]) * scale,
            weight_decay=float(opt["weight_decay"]),
            betas=opt["betas"],
            eps=float(opt["eps"]),
        )
        scheduler = build_scheduler(
            "warmup_cosine",
            optimizer,
            self.epochs * self.steps_per_epoch,
            warmup_steps=int(opt["warmup_epochs"]) * self.steps_per_epoch,
            min_lr=float(opt["min_lr"]) * scale,
        )
        grad_scaler = build_grad_scaler(self.device, self.amp)
        mix_cfg = self.config["mix"]
        mix = MixupCutmix(
            len(self.classes),
            mix_cfg["mixup_alpha"],
            mix_cfg["cutmix_alpha"],
            mix_cfg["prob"],
            mix_cfg["switch_prob"],
            self.config["label_smoothing"],
        )
        model = bare
        if self.world > 1:
            model = DistributedDataParallel(
                bare, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        return Parts(model, bare, ema, optimizer, scheduler, grad_scaler, mix)

    def train_step(self, parts: Parts, images: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator) -> float:
        """Mix the batch, take one optimiser step on the soft-target loss, step the schedule and the EMA."""
        images = images.to(self.device, non_blocking=True)  # (b, c, h, w)
        labels = labels.to(self.device, non_blocking=True)  # (b,)
        images, target = parts.mix(images, labels, rng)  # target (b, k)
        loss = optimizer_step(
            lambda: float32_loss(soft_cross_entropy, parts.model(images), target),
            parts.model,
            parts.optimizer,
            parts.grad_scaler,
            device=self.device,
            amp=self.amp,
            grad_clip=None if self.config["grad_clip"] is None else float(self.config["grad_clip"]),
        )
        parts.scheduler.step()
        if parts.ema is not None:
            parts.ema.update(parts.bare)
        return loss

    def train_epoch(self, parts: Parts, epoch: int) -> dict[str, float]:
        """One epoch of training steps over this process's shard; the mean loss over processes (``train_loss``)."""
        parts.model.train()
        indices = shard(len(self.train_set), self.rank, self.world, epoch, self.seed, shuffle=True)
        loader = epoch_loader(
            self.train_set, indices, epoch, self.batch_size, int(self.config["num_workers"]), drop_last=True
        )
        rng = np.random.default_rng((self.seed, epoch, self.rank))
        total = 0.0
        with epoch_progress(self.steps_per_epoch, f"epoch {epoch}", self.rank == 0) as bar:
            for images, labels in loader:
                loss = self.train_step(parts, images, labels, rng)
                total += loss
                bar.advance(loss)
        return {"train_loss": all_reduce_sums([total / self.steps_per_epoch], self.device)[0] / self.world}

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> tuple[float, float, float]:
        """Validation loss, top-1 and top-5 accuracy (percent) over every process's share of ``val/``."""
        model.eval()
        indices = shard(len(self.val_set), self.rank, self.world, 0, self.seed, shuffle=False)
        loader = epoch_loader(self.val_set, indices, 0, self.batch_size, int(self.config["num_workers"]), False)
        loss_sum = top1 = top5 = count = 0.0
        for images, labels in loader:
            images, labels = images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
            with amp_autocast(self.device, self.amp):
                logits = model(images).float()  # (b, k)
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
            c1, c5 = topk_correct(logits, labels)
            top1, top5, count = top1 + c1, top5 + c5, count + labels.shape[0]
        loss_sum, top1, top5, count = all_reduce_sums([loss_sum, top1, top5, count], self.device)
        return loss_sum / count, 100 * top1 / count, 100 * top5 / count

    def validate_epoch(self, parts: Parts) -> dict[str, float]:
        """The model's validation loss, top-1 and top-5, and the EMA weights' top-1 and top-5 (NaN if not evaluated)."""
        val_loss, top1, top5 = self.evaluate(parts.model)
        ema_top1 = ema_top5 = math.nan
        if parts.ema is not None and self.config["ema"]["evaluate"]:
            _, ema_top1, ema_top5 = self.evaluate(parts.ema.module)
        return {"val_loss": val_loss, "top1": top1, "top5": top5, "ema_top1": ema_top1, "ema_top5": ema_top5}

    def _checkpoints(self, parts: Parts, run_log: RunLog) -> CheckpointWriter:
        """The main process's checkpoint writer; ``extra`` also holds the EMA weights, the network and classes."""

        def extra() -> dict[str, Any]:
            ema = parts.ema.state_dict() if parts.ema is not None else None
            return {"ema": ema, "network": self.network, "classes": self.classes}

        return CheckpointWriter(
            self.files.checkpoints,
            parts.bare,
            parts.optimizer,
            parts.scheduler,
            parts.grad_scaler,
            run_log,
            None,
            self.config,
            extra,
        )

    def _resume(self, parts: Parts, path: Path, run_log: RunLog | None) -> int:
        checkpoint = load_checkpoint(path, map_location=self.device)
        self._check_resumable(checkpoint)
        start = restore_run(checkpoint, parts.bare, parts.optimizer, parts.scheduler, parts.grad_scaler, run_log)
        if parts.ema is not None:
            parts.ema.load_state_dict(checkpoint.extra["ema"] or parts.bare.state_dict())
        return start

    def _check_resumable(self, checkpoint: Checkpoint) -> None:
        if checkpoint.extra.get("network") != self.network or checkpoint.extra.get("classes") != self.classes:
            raise ValueError(
                f"continue_training: {checkpoint.path} pretrained {checkpoint.extra.get('network')!r} on other "
                f"classes or another network than {self.network!r} on this folder"
            )

    def encoder_config(self) -> dict[str, Any]:
        """The settings stored in ``encoder.pt`` beside the weights."""
        return {
            "network": self.network,
            "spatial_dims": 2,
            "in_channels": self.in_channels,
            "num_classes": len(self.classes),
            "classes": self.classes,
            "encoder": self.encoder,
            "weights": "ema" if self.config["export_ema"] and self.config["ema"]["enabled"] else "model",
            "pretrain": self.config,
        }

    def fit(self, continue_training: bool = False) -> Path:
        """Train to the last epoch (resuming the latest checkpoint if asked), then export the encoder; its path."""
        is_main = self.rank == 0
        resume_from = resume_checkpoint(self.files, continue_training)
        parts = self.build()
        run_log = RunLog(self.files.logs, best=("top1", "ema_top1"), score_label="accuracy [%]") if is_main else None
        try:
            writer = self._checkpoints(parts, run_log) if is_main else None
            if is_main:
                run_info = {"network": self.network, "image_folder": str(self.image_folder)}
                write_run_config(self.files.config, {**run_info, **self.config})
            start = self._resume(parts, resume_from, run_log) if resume_from is not None else 0
            EpochLoop(
                lambda epoch: self.train_epoch(parts, epoch),
                lambda epoch: self.validate_epoch(parts),
                parts.optimizer,
                self.epochs,
                int(self.config["checkpoint_every"]),
                run_log,
                writer,
                epoch_scheduler=None,  # train_step steps the schedule every iteration
            ).run(start)
            if is_main:
                weights = parts.ema.module if self.encoder_config()["weights"] == "ema" else parts.bare
                path = export_encoder(weights, self.files.encoder, self.encoder_config())
                log.info("wrote %s (best top-1 %.2f%%)", path, run_log.best)
        finally:
            if run_log is not None:
                run_log.close()
        return self.files.encoder


def pretrain(
    image_folder: str | Path,
    files: PretrainingPaths,
    network: str,
    config: Mapping[str, Any],
    device: torch.device,
    continue_training: bool = False,
) -> Path:
    """Pretrain the classifier ``network`` on ``image_folder``; returns the exported encoder's path.

    Args:
        image_folder: a folder with ``train/CLASS/*`` and ``val/CLASS/*`` images.
        files: the run's files (rank 0 writes them).
        network: a name from ``list_pretrain_models()``.
        config: the resolved pretraining config (plain dict).
        device: where to train.
        continue_training: resume from the latest checkpoint (or the final one).
    """
    return Pretraining(Path(image_folder), files, network, config, device).fit(continue_training)
