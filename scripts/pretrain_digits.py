"""Proof on real data: pretrain an encoder on scikit-learn's handwritten digits, fine-tune Swin-UMamba from it.

1. Writes an image folder from ``sklearn.datasets.load_digits`` (1,797 real 8 x 8 scans of 10 digits,
   upscaled to ``--size`` px greyscale PNGs), split 80/20 stratified into ``train/`` and ``val/``.
2. ``mambaseg pretrain`` of ``--network`` (default ``vmamba_tiny``, the encoder shape of ``swin_umamba``)
   with one input channel, briefly, on the CPU; reports top-1 on ``val/`` (chance: 10%). A finished
   run in the workspace is reused.
3. Unless ``--skip-finetune``: ``mambaseg train DATASET -c 2d -n swin_umamba`` twice with the same short
   budget, from ``encoder.pt`` (``network.pretrained``) and from scratch; reports both validation Dices.

Needs scikit-learn (``pip install -e .[dev]``).

Usage: python scripts/pretrain_digits.py FOLDER --workspace WS [--epochs 10] [--batch-size 64]
           [--finetune-epochs 5] [--finetune-iterations 25] [--finetune-lr 1e-4]
           [--dataset $MAMBASEG_REAL_DATA/Task04_Hippocampus] [--per-class N] [--tiny] [--skip-finetune]
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from mambaseg.cli.main import main as mambaseg
from mambaseg.data import load_dataset
from mambaseg.workspace import Workspace
from mambaseg.workspace.layout import PretrainingFiles

sys.path.insert(0, str(Path(__file__).resolve().parent))
from default_dataset import require_dataset, task04_default  # noqa: E402


def write_digits_folder(folder: Path, size: int, per_class: int | None = None, seed: int = 0) -> tuple[int, int]:
    """The digits as ``folder/{train,val}/digitK/N.png``; returns the (train, val) image counts."""
    digits = load_digits()
    images, labels = digits.images, digits.target  # (n, 8, 8) in 0..16, (n,)
    if per_class is not None:
        keep = np.concatenate([np.flatnonzero(labels == k)[:per_class] for k in range(10)])
        images, labels = images[keep], labels[keep]
    indices = np.arange(len(labels))
    train, val = train_test_split(indices, test_size=0.2, stratify=labels, random_state=seed)
    for split, chosen in (("train", train), ("val", val)):
        for i in chosen:
            target = folder / split / f"digit{labels[i]}" / f"{i:04d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            pixels = np.round(images[i] * 255 / 16).astype(np.uint8)
            Image.fromarray(pixels, "L").resize((size, size), Image.Resampling.BICUBIC).save(target)
    return len(train), len(val)


def pretrain(folder: Path, workspace: Path, network: str, args: argparse.Namespace) -> PretrainingFiles:
    run = Workspace(workspace).pretraining(folder, network)
    if run.encoder.is_file():
        print(f"reusing the finished pretraining run {run.folder}")
        return run
    overrides = [
        f"epochs={args.epochs}",
        f"batch_size={args.batch_size}",
        "num_workers=1",
        f"data.image_size={args.size}",
        "model.in_channels=1",
        f"model.tiny={str(args.tiny).lower()}",
        "optimizer.base_lr=1.0e-2",  # lr 6.25e-4 at batch 64
        f"optimizer.warmup_epochs={min(1, args.epochs - 1)}",
        "ema.decay=0.99",
    ]
    status = mambaseg(["pretrain", str(folder), "--workspace", str(workspace), "-n", network, *overrides])
    if status != 0:
        raise SystemExit(f"mambaseg pretrain failed ({status})")
    return run


def finetune(
    dataset: Path, workspace: Path, args: argparse.Namespace, encoder: Path | None, freeze_epochs: int
) -> float:
    epochs = args.finetune_epochs
    overrides = [
        "trainer=cpu_short",
        f"trainer.num_epochs={epochs}",
        f"trainer.iterations_per_epoch={args.finetune_iterations}",
        "trainer.val_iterations=5",
        f"trainer.checkpoint_every={epochs}",
        "trainer.optimizers.adamw_swin_umamba.scheduler.warmup_steps=1",
        f"trainer.optimizers.adamw_swin_umamba.optimizer.lr={args.finetune_lr}",
        "batch_size=16",
        "num_workers=1",
    ]
    if encoder is not None:
        overrides += [f"network.pretrained={encoder}", f"network.freeze_encoder_epochs={freeze_epochs}"]
    args = ["train", str(dataset), "--workspace", str(workspace), "-c", "2d", "-n", "swin_umamba", "-f", "0"]
    if mambaseg([*args, *overrides]) != 0:
        raise SystemExit("mambaseg train failed")
    run = Workspace(workspace).dataset(load_dataset(dataset).name).run("2d", "swin_umamba")
    return float(json.loads(run.fold(0).validation_summary.read_text())["foreground_mean"]["dice"])


def copy_prepared(source: Path, target: Path) -> None:
    """The dataset's fingerprint, plans, splits and preprocessed data, without runs, so both runs share them."""
    for dataset in source.iterdir():
        shutil.copytree(dataset, target / dataset.name, ignore=shutil.ignore_patterns("runs"), dirs_exist_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where to write the digits image folder")
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--network", default="vmamba_tiny")
    parser.add_argument("--epochs", type=int, default=10, help="pretraining epochs")
    parser.add_argument("--size", type=int, default=32, help="image edge in pixels")
    parser.add_argument("--batch-size", type=int, default=64, help="pretraining batch")
    parser.add_argument("--per-class", type=int, default=None, help="use only this many digits of each class")
    parser.add_argument("--tiny", action="store_true", help="the tiny test classifier (cannot fine-tune swin_umamba)")
    parser.add_argument("--skip-finetune", action="store_true")
    parser.add_argument(
        "--dataset",
        type=Path,
        default=task04_default(),
        help="dataset to fine-tune on (default: $MAMBASEG_REAL_DATA/Task04_Hippocampus)",
    )
    parser.add_argument("--finetune-epochs", type=int, default=5)
    parser.add_argument("--finetune-iterations", type=int, default=25, help="fine-tuning iterations per epoch")
    parser.add_argument("--finetune-lr", type=float, default=1e-4, help="AdamW peak lr (Swin-UMamba's: 1e-4)")
    parser.add_argument("--freeze-epochs", type=int, default=1, help="encoder frozen for this many fine-tuning epochs")
    args = parser.parse_args()
    if not args.skip_finetune:
        args.dataset = require_dataset(args.dataset)

    counts = write_digits_folder(args.folder, args.size, args.per_class)
    print(f"digits: {counts[0]} training and {counts[1]} validation images of {args.size} x {args.size} px")
    run = pretrain(args.folder, args.workspace, args.network, args)
    records = list(csv.DictReader(run.logs.metrics.open()))
    last = records[-1]
    print(
        f"pretraining {args.network}, {len(records)} epochs: val top-1 {float(last['top1']):.1f}% (chance 10%), "
        f"EMA top-1 {float(last['ema_top1']):.1f}%, top-5 {float(last['top5']):.1f}%; encoder: {run.encoder}"
    )
    if args.skip_finetune:
        return
    pretrained_ws, scratch_ws = args.workspace / "finetune_pretrained", args.workspace / "finetune_scratch"
    encoder = run.encoder
    dice_pretrained = finetune(args.dataset, pretrained_ws, args, encoder, args.freeze_epochs)
    copy_prepared(pretrained_ws, scratch_ws)
    dice_scratch = finetune(args.dataset, scratch_ws, args, None, 0)
    budget = f"{args.finetune_epochs} epochs x {args.finetune_iterations} iterations, batch 16, lr {args.finetune_lr:g}"
    print(f"swin_umamba 2d, fold 0, {budget}:")
    print(f"  from the digits encoder: mean Dice {dice_pretrained:.4f}")
    print(f"  from scratch:            mean Dice {dice_scratch:.4f}")


if __name__ == "__main__":
    main()
