"""The model side of the embedder: which networks make the descriptor (one backbone, or an
ensemble of several), at which input sizes, pooled how, with which heads, whitened how; and the
spec that names all of it. Nothing here knows the device or what runs a network: that is the
session's (session.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from lookalike.embedder.backbones import (
    ENSEMBLE_JOIN,
    Backbone,
    InputSizeUnsupported,
    build_backbone,
    ensemble_members,
)
from lookalike.embedder.config import EmbedderConfig
from lookalike.embedder.errors import EmbedderError, WeightsUnavailable
from lookalike.embedder.model import RetrievalNet
from lookalike.embedder.spec import EmbedderSpec, tta_sizes
from lookalike.embedder.whitening import WhiteningError

# Below this a stride-32 backbone has no feature map left to pool.
MIN_INPUT_PX = 32


def check_tta(backbone: Backbone, input_size: int, scales: Sequence[float]) -> tuple[int, ...]:
    """The sizes of `tta_sizes`, or InputSizeUnsupported when the backbone cannot take one."""
    if backbone.fixed_size and any(s != 1.0 for s in scales):
        raise InputSizeUnsupported(
            f"backbone {backbone.name!r} takes {backbone.fixed_size} px inputs only (its "
            f"positional embeddings fix the size): test-time scales must be [1.0], got {list(scales)}"
        )
    sizes = tta_sizes(input_size, scales)
    if min(sizes) < MIN_INPUT_PX:
        raise InputSizeUnsupported(
            f"scales {list(scales)} of a {input_size} px input give {min(sizes)} px, below the "
            f"{MIN_INPUT_PX} px a backbone needs; use larger scales"
        )
    return sizes


def category_names(classes: int) -> tuple[str, ...]:
    """Names of a classifier's outputs: ImageNet's 1,000 classes (torchvision's names, in the
    order every ImageNet head here uses), else `class_<i>`."""
    from torchvision.models import MobileNet_V2_Weights

    names = tuple(MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])
    if classes == len(names):
        return names
    return tuple(f"class_{i}" for i in range(classes))


def top_categories(categories: Sequence[str], logits: NDArray[np.float32]) -> list[str]:
    """The top-1 class name of each row of logits ("" each without a classifier)."""
    if not categories:
        return [""] * len(logits)
    return [categories[int(i)] for i in np.argmax(logits, axis=1)]


@dataclass(frozen=True, slots=True)
class ModelMember:
    """One network of the model (an ensemble has several) and the input sizes it sees."""

    backbone: Backbone
    # On the CPU until the session places it.
    net: RetrievalNet
    input_size: int
    # One per test-time scale.
    sizes: tuple[int, ...]
    # Columns of one forward pass: the descriptor, then the logits when the model predicts
    # categories.
    width: int
    # Everything an exported graph of `net` depends on besides the input size (the key of the
    # engines' graph cache).
    identity: Mapping[str, object]

    @property
    def dim(self) -> int:
        """The member's descriptor dimension."""
        return self.net.dim

    @property
    def classes(self) -> int:
        """The classifier's outputs (0 without one)."""
        return self.net.classes


@dataclass(frozen=True, slots=True)
class EnsembleModel:
    """The networks of the descriptor in descriptor order, the class names of their joint
    classifier (empty without one), and the config they were built from (pooling, test-time
    passes, whitening)."""

    config: EmbedderConfig
    members: tuple[ModelMember, ...]
    categories: tuple[str, ...]

    @property
    def raw_dim(self) -> int:
        """The joined descriptor's dimension before whitening."""
        return sum(m.dim for m in self.members)

    @property
    def width(self) -> int:
        """Columns of a raw row: the joined descriptor, then the logits."""
        return self.raw_dim + len(self.categories)

    def spec(self, quantization: str) -> EmbedderSpec:
        """The model spec, given the int8 graphs' ids the session runs ("" in float)."""
        config, whitening = self.config, self.config.whitening
        return EmbedderSpec(
            backbone=ENSEMBLE_JOIN.join(m.backbone.name for m in self.members),
            weights=ENSEMBLE_JOIN.join(m.backbone.weights_id for m in self.members),
            pooling=config.pooling, gem_p=float(config.gem_p),
            # The largest member's: what inputs are decoded for (`draft_px`).
            input_size=max(m.input_size for m in self.members), resize=config.resize,
            whitening=whitening.id if whitening is not None else "none",
            dim=whitening.dim if whitening is not None else self.raw_dim,
            decode_px=config.decode_px, scales=tuple(float(s) for s in config.scales),
            flip=config.flip, semantic_weight=float(config.semantic_weight),
            quantization=quantization,
        )

    def empty(self) -> NDArray[np.float32]:
        """Raw rows of no image: 0 x width."""
        return np.zeros((0, self.width), dtype=np.float32)

    def split(self, rows: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Raw rows (descriptor, then logits) -> whitened descriptors and the logits."""
        vectors = rows[:, :self.raw_dim]
        if self.config.whitening is not None:
            vectors = self.config.whitening.apply(vectors)
        return (np.ascontiguousarray(vectors, dtype=np.float32),
                np.ascontiguousarray(rows[:, self.raw_dim:], dtype=np.float32))


def _member(config: EmbedderConfig, backbone: Backbone, logits: bool) -> ModelMember:
    size = config.input_size or backbone.input_size
    sizes = check_tta(backbone, size, config.scales)
    net = RetrievalNet(backbone, config.pooling, config.gem_p,
                       semantic_weight=config.semantic_weight, logits=logits)
    identity: dict[str, object] = {
        "backbone": backbone.name, "weights": backbone.weights_id, "pooling": config.pooling,
        "gem_p": float(config.gem_p), "semantic_weight": float(config.semantic_weight),
        "logits": logits, "dim": net.dim, "classes": net.classes}
    width = net.dim + (net.classes if logits else 0)
    return ModelMember(backbone, net, size, sizes, width, identity)


def build_model(config: EmbedderConfig) -> EnsembleModel:
    """The networks the config names, their weights loaded, checked to join into one
    descriptor (and one classifier) that the config's whitening fits."""
    names = ensemble_members(config.backbone)
    if len(names) > 1 and config.weights is not None:
        raise WeightsUnavailable(
            f"a weights file holds one backbone, but {config.backbone!r} is an ensemble of "
            f"{len(names)}; each member loads its default weights (leave the weights empty)"
        )
    backbones = [build_backbone(name, config.weights, config.input_size) for name in names]
    # The logits ride along with every forward pass: one small matrix product gives each
    # image's predicted category (a partition key) without a second pass.
    logits = all(b.head is not None for b in backbones)
    members = tuple(_member(config, backbone, logits) for backbone in backbones)
    if logits and len({m.classes for m in members}) > 1:
        raise EmbedderError(
            f"the members of ensemble {config.backbone!r} predict different numbers of classes "
            f"({', '.join(f'{m.backbone.name}: {m.classes}' for m in members)})"
        )
    dim = sum(m.dim for m in members)
    whitening = config.whitening
    if whitening is not None and whitening.input_dim != dim:
        raise WhiteningError(
            f"whitening {whitening.id} was learned on {whitening.input_dim}-dimensional "
            f"descriptors, but backbone {config.backbone!r} gives {dim}"
        )
    return EnsembleModel(config, members, category_names(members[0].classes) if logits else ())
