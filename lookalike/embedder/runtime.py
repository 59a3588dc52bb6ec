"""The embedder as a service object: load once, embed batches, one result per input in order.

`Embedder` composes the model (what network: ensemble.py) with the session (where and how it
runs: session.py); the arithmetic of a batch is passes.py's, decoding inputs.py's. The names
importers take from here (the config, the outcome, the test-time checks) live in those modules.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from functools import partial

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image

from lookalike.embedder.accel import AccelPlan
from lookalike.embedder.config import EmbedderConfig
from lookalike.embedder.engines import export_onnx
from lookalike.embedder.ensemble import (
    EnsembleModel,
    build_model,
    category_names,
    check_tta,
    top_categories,
)
from lookalike.embedder.errors import ImageError
from lookalike.embedder.inputs import EmbedInput, decode_chunk
from lookalike.embedder.outcome import EmbedOutcome, outcomes
from lookalike.embedder.passes import launch
from lookalike.embedder.session import Session, fetch_rows
from lookalike.embedder.spec import EmbedderSpec, draft_size
from lookalike.embedder.tensor_decode import decode_jpegs
from lookalike.embedder.transforms import Decoded, decode

__all__ = ["EmbedOutcome", "Embedder", "EmbedderConfig", "category_names", "check_tta"]


class Embedder:
    """A retrieval network with its preprocessing; thread-safe, loaded once."""

    def __init__(self, config: EmbedderConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._session = Session(config)
        self._model: EnsembleModel | None = None
        self._spec: EmbedderSpec | None = None
        self.device: torch.device = self._session.device
        self.plan: AccelPlan = self._session.plan
        self.load_seconds = 0.0

    @property
    def batch_size(self) -> int:
        """Images per model batch: the configured size, or the family's default on the device
        for the engine the config picks (known without loading the model)."""
        return self._session.batch_size

    @property
    def decodes_on_device(self) -> bool:
        """Whether `embed_bytes` decodes JPEGs as tensors on the device."""
        return self._session.decodes_on_device

    def load(self) -> None:
        """Build the network, load its weights and warm it up; later calls do nothing."""
        with self._lock:
            if self._model is not None:
                return
            started = time.perf_counter()
            if self.config.threads:
                torch.set_num_threads(self.config.threads)
            model = build_model(self.config)
            self._session.start(model)
            self._spec = model.spec(self._session.quantization)
            self._model = model
        if self.config.warmup:
            self._warm_up()
        self.load_seconds = time.perf_counter() - started

    def _loaded(self) -> EnsembleModel:
        self.load()
        assert self._model is not None
        return self._model

    def _warm_up(self) -> None:
        # CUDA picks kernels per input shape, so warm up at the batch size requests will use.
        count = self.batch_size if self.device.type == "cuda" else 1
        size = self.spec.input_size
        grey = Image.new("RGB", (size, size), (128, 128, 128))
        model = self._loaded()
        fetch_rows(launch(model, self._session, [grey] * count), model.width)
        if self.decodes_on_device:
            out = io.BytesIO()
            grey.save(out, format="JPEG")
            decode_jpegs([out.getvalue()], self.device)

    @property
    def spec(self) -> EmbedderSpec:
        """The model spec (loads the model)."""
        self.load()
        assert self._spec is not None
        return self._spec

    @property
    def predicts_categories(self) -> bool:
        """Whether outcomes carry a predicted category: the backbone has a classifier (loads
        the model)."""
        return bool(self._loaded().categories)

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

    def embed_images(self, images: Sequence[EmbedInput]) -> NDArray[np.float32]:
        """Descriptors N x D float32, L2-normalised, in input order, of RGB images: PIL images,
        or 3 x H x W uint8 tensors already on the device (from `decode_jpegs`).

        Batch i+1 is prepared on the host while the device still computes batch i (CUDA
        kernels run asynchronously), and its copy overlaps that compute on a side stream."""
        return self.embed_images_with_logits(images)[0]

    def embed_images_with_categories(
        self, images: Sequence[EmbedInput]
    ) -> tuple[NDArray[np.float32], list[str]]:
        """`embed_images` and each image's predicted category from the same forward pass
        (all "" when the backbone has no classifier)."""
        vectors, logits = self.embed_images_with_logits(images)
        return vectors, self.categories_of(logits)

    def embed_images_with_logits(
        self, images: Sequence[EmbedInput]
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """`embed_images` and the classifier's logits N x C from the same forward pass, C being
        `len(category_names)` (0 when the backbone has no classifier)."""
        model = self._loaded()
        step = self.batch_size
        chunks = (images[start:start + step] for start in range(0, len(images), step))
        return self._embedded(model, chunks)

    def _embedded(
        self, model: EnsembleModel, chunks: Iterable[Sequence[EmbedInput]]
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """The whitened descriptors and the logits of every chunk, in order."""
        rows = self._session.pipelined(chunks, partial(launch, model, self._session), model.width)
        return model.split(np.concatenate([model.empty(), *rows]))

    @property
    def category_names(self) -> tuple[str, ...]:
        """The classifier's class names, in logit order (empty without one; loads the model)."""
        return self._loaded().categories

    def categories_of(self, logits: NDArray[np.float32]) -> list[str]:
        """The top-1 class name of each row of logits ("" each without a classifier)."""
        return top_categories(self._model.categories if self._model is not None else (), logits)

    def onnx_graph(self, member: int = 0) -> bytes:
        """A member's network exported to ONNX at its input size (fp32, padding folded): what
        ONNX Runtime runs, and what `lookalike quantize` starts from."""
        model = self._loaded()
        return export_onnx(self._session.members[member].net, model.members[member].input_size)

    @property
    def engine(self) -> str:
        """What runs the network: `onnxruntime` or `torch` (an ensemble whose members run on
        both: their names joined by `+`, in member order); loads the model."""
        self.load()
        return self._session.engine

    @property
    def members(self) -> tuple[str, ...]:
        """The backbone name of each network, in descriptor order: one, or an ensemble's
        members (loads the model)."""
        return tuple(m.backbone.name for m in self._loaded().members)

    def pixels(self, images: Sequence[EmbedInput], size: int = 0,
               member: int = 0) -> torch.Tensor:
        """The normalised N x 3 x size x size batch `forward` takes for one member (the only
        one but for an ensemble), on the device, in the plan's memory format (size 0: that
        member's input size)."""
        chosen = self._loaded().members[member]
        return self._session.pixels(images, size or chosen.input_size, chosen.backbone)

    def forward(self, pixels: torch.Tensor, member: int = 0) -> torch.Tensor:
        """One member's network alone on a normalised N x 3 x H x W batch on the device, under
        the plan's precision; asynchronous on CUDA (the result is ready once read). Rows are
        the member's raw descriptor, then its class logits where it has a classifier."""
        self.load()
        return self._session.forward(pixels, member)

    def embed_bytes(self, blobs: Sequence[bytes]) -> list[EmbedOutcome]:
        """One outcome per encoded image, in order; a bad image fails alone.

        With `decodes_on_device`, each batch's JPEGs are decoded together on the device while
        the previous batch computes; other formats and files the tensor decoder refuses go
        through PIL, which names what is wrong with a bad one."""
        model = self._loaded()
        step = self.batch_size
        draft_px = self._draft_px()
        device = self.device if self.decodes_on_device else None
        errors: list[ImageError | None] = []

        def chunks() -> Iterator[list[EmbedInput]]:
            for start in range(0, len(blobs), step):
                decoded = decode_chunk(blobs[start:start + step], self.config.max_pixels,
                                       draft_px, device)
                # Only the errors are kept: the decoded pixels are freed once launched.
                errors.extend(d if isinstance(d, ImageError) else None for d in decoded)
                yield [d for d in decoded if not isinstance(d, ImageError)]

        vectors, logits = self._embedded(model, chunks())
        return outcomes(errors, vectors, top_categories(model.categories, logits))
