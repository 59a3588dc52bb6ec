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

from lookalike.embedder.backbones import Backbone, build_backbone
from lookalike.embedder.errors import ImageError
from lookalike.embedder.model import RetrievalNet
from lookalike.embedder.spec import EmbedderSpec
from lookalike.embedder.transforms import Decoded, ResizeMode, decode, to_batch


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
    # JPEGs are decoded at reduced DCT scale down to this many pixels a side (or the input size).
    decode_px: int = 256


@dataclass(frozen=True, slots=True)
class EmbedOutcome:
    """One input's result: its descriptor, or why it has none."""

    vector: NDArray[np.float32] | None = None
    error: ImageError | None = None

    @property
    def ok(self) -> bool:
        """Whether the input was embedded."""
        return self.vector is not None


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
        self.device = pick_device(config.device)
        self.load_seconds = 0.0

    def load(self) -> None:
        """Build the network and load its weights; later calls do nothing."""
        with self._lock:
            if self._net is not None:
                return
            started = time.perf_counter()
            if self.config.threads:
                torch.set_num_threads(self.config.threads)
            backbone = build_backbone(
                self.config.backbone, self.config.weights, self.config.input_size
            )
            net = RetrievalNet(backbone, self.config.pooling, self.config.gem_p)
            self._net = net.eval().to(self.device)
            self._backbone = backbone
            size = self.config.input_size or backbone.input_size
            self._spec = EmbedderSpec(
                backbone=backbone.name, weights=backbone.weights_id, pooling=self.config.pooling,
                gem_p=float(self.config.gem_p), input_size=size, resize=self.config.resize,
                whitening="none", dim=net.dim, decode_px=self.config.decode_px,
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
        return max(self.config.decode_px, self.config.input_size or self.spec.input_size)

    def embed_images(self, images: Sequence[Image.Image]) -> NDArray[np.float32]:
        """Descriptors of RGB images, N x D float32, L2-normalised, in input order."""
        self.load()
        assert self._net is not None
        assert self._backbone is not None
        assert self._spec is not None
        if not images:
            return np.zeros((0, self._spec.dim), dtype=np.float32)
        out: list[NDArray[np.float32]] = []
        step = self.config.batch_size
        for start in range(0, len(images), step):
            batch = to_batch(
                images[start:start + step], self._spec.input_size, self.config.resize,
                self._backbone.mean, self._backbone.std,
            ).to(self.device, non_blocking=True)
            with self._lock, torch.inference_mode():
                out.append(self._net(batch).float().cpu().numpy())
        return np.ascontiguousarray(np.concatenate(out), dtype=np.float32)

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
