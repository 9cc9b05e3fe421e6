"""A tiny image folder in ImageNet's layout, made with PIL: 3 classes told apart by brightness."""

from pathlib import Path

import numpy as np
from PIL import Image


def write_image_folder(root: Path, per_class: int = 6, val_per_class: int = 2, size: int = 16, mode: str = "RGB"):
    """``root/train/classK/*.png`` and ``root/val/classK/*.png`` for K = 0, 1, 2; returns ``root``."""
    rng = np.random.default_rng(0)
    channels = 3 if mode == "RGB" else 1
    for split, count in (("train", per_class), ("val", val_per_class)):
        for k in range(3):
            folder = root / split / f"class{k}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = (rng.random((size, size, channels)) * 60 + 80 * k).astype(np.uint8)
                Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(folder / f"{i}.png")
    return root
