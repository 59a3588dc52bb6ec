"""The embedder as a service object: load once, embed batches, one result per input in order."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image

from lookalike.embedder import functional as LF
from lookalike.embedder.backbones import Backbone, InputSizeUnsupported, build_backbone
from lookalike.embedder.errors import ImageError
from lookalike.embedder.layers import POOLINGS
from lookalike.embedder.model import RetrievalNet
from lookalike.embedder.spec import EmbedderSpec, draft_size, tta_sizes
from lookalike.embedder.transforms import Decoded, ResizeMode, decode, to_batch
from lookalike.embedder.whitening import PCAWhitening, WhiteningError

# Below this a stride-32 backbone has no feature map left to pool.
MIN_INPUT_PX = 32
MAX_SCALE = 2.0


@dataclass(frozen=True, slots=True)
class EmbedderConfig:
    """How to build and run the embedder."""

    backbone: str = "efficientnet_lite0"
    weights: Path | None = None
    input_size: int = 0
    resize: ResizeMode = "squash"
    pooling: str = "gem"
    gem_p: float = 1.0
    batch_size: int = 32
    device: str = "auto"
    threads: int = 0
    max_pixels: int = 50_000_000
    # JPEGs are decoded at reduced DCT scale down to this many pixels a side (or the largest
    # test-time input size).
    decode_px: int = 256
    # Test-time augmentation: one pass per scale of the input size, each also mirrored with
    # `flip`; the passes' descriptors are summed and re-normalised.
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    # Applied to the final descriptors; it sets the spec's whitening id and dimension.
    whitening: PCAWhitening | None = None
    # The class posterior joined to the descriptor with this weight (0: off); see RetrievalNet.
    semantic_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {self.pooling!r}; known: {', '.join(POOLINGS)}")
        if not self.scales:
            raise ValueError("scales must hold at least one scale (1.0: the input size itself)")
        bad = [s for s in self.scales if not 0 < s <= MAX_SCALE]
        if bad:
            raise ValueError(
                f"scales must each be in (0, {MAX_SCALE:g}] (a factor of the input size), got {bad}"
            )


@dataclass(frozen=True, slots=True)
class EmbedOutcome:
    """One input's result: its descriptor, or why it has none."""

    vector: NDArray[np.float32] | None = None
    error: ImageError | None = None

    @property
    def ok(self) -> bool:
        """Whether the input was embedded."""
        return self.vector is not None


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


def pick_device(name: str) -> torch.device:
    """`auto` is the first CUDA device when one is present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Embedder:
    """A retrieval network with its preprocessing; thread-safe, loaded once."""

    def __init__(self, config: EmbedderConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._net: RetrievalNet | None = None
        self._backbone: Backbone | None = None
        self._spec: EmbedderSpec | None = None
        self._sizes: tuple[int, ...] = ()
        self.device = pick_device(config.device)
        self.load_seconds = 0.0

    def load(self) -> None:
        """Build the network and load its weights; later calls do nothing."""
        with self._lock:
            if self._net is not None:
                return
            started = time.perf_counter()
            config = self.config
            if config.threads:
                torch.set_num_threads(config.threads)
            backbone = build_backbone(config.backbone, config.weights, config.input_size)
            size = config.input_size or backbone.input_size
            sizes = check_tta(backbone, size, config.scales)
            whitening = config.whitening
            net = RetrievalNet(backbone, config.pooling, config.gem_p,
                               semantic_weight=config.semantic_weight)
            if whitening is not None and whitening.input_dim != net.dim:
                raise WhiteningError(
                    f"whitening {whitening.id} was learned on {whitening.input_dim}-dimensional "
                    f"descriptors, but backbone {backbone.name!r} gives {net.dim}"
                )
            self._net = net.eval().to(self.device)
            self._backbone = backbone
            self._sizes = sizes
            self._spec = EmbedderSpec(
                backbone=backbone.name, weights=backbone.weights_id, pooling=config.pooling,
                gem_p=float(config.gem_p), input_size=size, resize=config.resize,
                whitening=whitening.id if whitening is not None else "none",
                dim=whitening.dim if whitening is not None else net.dim,
                decode_px=config.decode_px, scales=tuple(float(s) for s in config.scales),
                flip=config.flip, semantic_weight=float(config.semantic_weight),
            )
            self.load_seconds = time.perf_counter() - started

    @property
    def spec(self) -> EmbedderSpec:
        """The model spec (loads the model)."""
        self.load()
        assert self._spec is not None
        return self._spec

    @property
    def dim(self) -> int:
        """Descriptor dimension (loads the model)."""
        return self.spec.dim

    def decode(self, data: bytes) -> Image.Image:
        """Decode one image exactly as this embedder's inputs are decoded; raises ImageError."""
        return self.decode_sized(data).image

    def decode_sized(self, data: bytes) -> Decoded:
        """Like `decode`, with the original image's upright width and height."""
        return decode(data, self.config.max_pixels, self._draft_px())

    def _draft_px(self) -> int:
        if not self.config.decode_px:
            return 0
        # A configured input size spares loading the model just to decode.
        size = self.config.input_size or self.spec.input_size
        return draft_size(self.config.decode_px, size, self.config.scales)

    def embed_images(self, images: Sequence[Image.Image]) -> NDArray[np.float32]:
        """Descriptors of RGB images, N x D float32, L2-normalised, in input order."""
        self.load()
        assert self._spec is not None
        if not images:
            return np.zeros((0, self._spec.dim), dtype=np.float32)
        step = self.config.batch_size
        vectors = np.concatenate(
            [self._embed_batch(images[start:start + step]) for start in range(0, len(images), step)]
        )
        if self.config.whitening is not None:
            vectors = self.config.whitening.apply(vectors)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _embed_batch(self, images: Sequence[Image.Image]) -> NDArray[np.float32]:
        """One batch through every test-time pass: the sum of L2-normalised passes, normalised."""
        assert self._net is not None
        assert self._backbone is not None
        total: torch.Tensor | None = None
        with torch.inference_mode():
            for size in self._sizes:
                batch = to_batch(
                    images, size, self.config.resize, self._backbone.mean, self._backbone.std,
                ).to(self.device, non_blocking=True)
                for view in (batch, batch.flip(-1)) if self.config.flip else (batch,):
                    with self._lock:
                        descriptors: torch.Tensor = self._net(view)
                    total = descriptors if total is None else total + descriptors
            assert total is not None
            # One pass is already normalised: leaving it alone keeps the plain path bit-exact.
            if len(self._sizes) > 1 or self.config.flip:
                total = LF.l2n(total)
            return np.asarray(total.float().cpu().numpy(), dtype=np.float32)

    def embed_bytes(self, blobs: Sequence[bytes]) -> list[EmbedOutcome]:
        """One outcome per encoded image, in order; a bad image fails alone."""
        decoded: list[Image.Image | ImageError] = []
        for data in blobs:
            try:
                decoded.append(self.decode(data))
            except ImageError as exc:
                decoded.append(exc)
        good = [im for im in decoded if isinstance(im, Image.Image)]
        vectors = iter(self.embed_images(good))
        return [
            EmbedOutcome(error=item) if isinstance(item, ImageError)
            else EmbedOutcome(vector=next(vectors))
            for item in decoded
        ]
