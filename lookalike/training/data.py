"""A labelled folder as training data: a deterministic split by image, and decoded images."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from lookalike.core.errors import ConfigError
from lookalike.core.paths import read_exact
from lookalike.embedder.transforms import decode
from lookalike.evaluation.datasets import load_dataset


@dataclass(frozen=True, slots=True)
class LabelledImages:
    """Image files (resolved) with their class names (sorted classes, files in dataset order),
    and the folder they came from."""

    name: str
    root: Path
    paths: list[Path]
    labels: list[str]

    @property
    def classes(self) -> list[str]:
        """The distinct class names, sorted."""
        return sorted(set(self.labels))

    def class_indices(self, subset: Sequence[int]) -> NDArray[np.int64]:
        """Class index (into `classes`) of each image of `subset`."""
        index = {c: i for i, c in enumerate(self.classes)}
        return np.array([index[self.labels[i]] for i in subset], dtype=np.int64)


def labelled_images(root: Path, *, confine: bool = True) -> LabelledImages:
    """The images of a class-layout dataset or plain `<class>/<image>` folder; `confine` as in
    `load_dataset` (a server's jobs keep it on)."""
    dataset = load_dataset(root, confine=confine)
    if dataset.kind != "class":
        raise ConfigError(f"{root} is an instance-layout dataset; training needs class labels "
                          "(labels.json or <class>/<image> folders)")
    return LabelledImages(dataset.name, root.resolve(),
                          [item.path for item in dataset.database],
                          [item.label for item in dataset.database])


def split_by_image(
    labels: Sequence[str], fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """(kept, split-off) image indices: in every class, a seeded `fraction` of its images (at
    least one when the class has two or more, never all) goes to the second list. The same
    labels and seed give the same split; each image is in exactly one list."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"split fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    kept: list[int] = []
    split_off: list[int] = []
    for cls in sorted(set(labels)):
        members = [i for i, label in enumerate(labels) if label == cls]
        order = rng.permutation(len(members))
        n_off = min(max(round(len(members) * fraction), 1), len(members) - 1) if len(members) > 1 else 0
        split_off += sorted(members[j] for j in order[:n_off])
        kept += sorted(members[j] for j in order[n_off:])
    return sorted(kept), sorted(split_off)


def load_images(paths: Sequence[Path], max_pixels: int, decode_px: int) -> list[Image.Image]:
    """Decoded upright RGB images, JPEGs at reduced scale down to `decode_px` a side."""
    images = []
    for path in paths:
        try:
            images.append(decode(read_exact(path), max_pixels, decode_px).image)
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc
    return images
