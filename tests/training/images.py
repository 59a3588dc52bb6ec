"""Generated labelled images whose classes differ visibly (colour and stripe texture)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# (base colour, stripe period): pairs of classes share a colour and differ in texture, so a
# pretrained network separates them only partly and fine-tuning has something to learn.
CLASS_LOOKS = {
    "blue_coarse": ((50, 80, 190), 9), "blue_fine": ((50, 80, 190), 3),
    "red_coarse": ((190, 60, 50), 9), "red_fine": ((190, 60, 50), 3),
}


def make_image(colour: tuple[int, int, int], period: int, size: int,
               rng: np.random.Generator) -> Image.Image:
    """A noisy image of `colour` with stripes of `period` pixels, random phase and direction."""
    base = np.array(colour, dtype=np.float64)[None, None, :] + rng.normal(0, 45, (size, size, 3))
    coords = np.arange(size) + rng.integers(period)
    stripes = ((coords // max(period // 2, 1)) % 2).astype(bool)
    mask = stripes[:, None, None] if rng.random() < 0.5 else stripes[None, :, None]
    shaded = np.where(np.broadcast_to(mask, base.shape), base * 0.45, base)
    return Image.fromarray(np.clip(shaded, 0, 255).astype(np.uint8))


def make_images(per_class: int, size: int = 48, seed: int = 0) -> tuple[list[Image.Image], list[int]]:
    """`per_class` images of each class in CLASS_LOOKS with their class indices."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for index, (colour, period) in enumerate(CLASS_LOOKS.values()):
        for _ in range(per_class):
            images.append(make_image(colour, period, size, rng))
            labels.append(index)
    return images, labels


def write_folder(root: Path, per_class: int, size: int = 48, seed: int = 0) -> Path:
    """`<class>/<i>.png` images, `per_class` of each class in CLASS_LOOKS."""
    images, labels = make_images(per_class, size, seed)
    names = list(CLASS_LOOKS)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{i:03d}.png")
    return root
