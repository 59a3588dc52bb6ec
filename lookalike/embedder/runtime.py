"""The embedder as a service object: load once, embed batches, one result per input in order."""

from __future__ import annotations

import io
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image
from torch import nn

from lookalike.embedder import functional as LF
from lookalike.embedder.accel import (
    AccelPlan,
    DeviceFeeder,
    Precision,
    Toggle,
    plan_for,
    prepare,
    tuned_batch_size,
)
from lookalike.embedder.backbones import (
    ENSEMBLE_JOIN,
    Backbone,
    InputSizeUnsupported,
    build_backbone,
    ensemble_members,
)
from lookalike.embedder.engines import (
    ENGINES,
    EngineName,
    EngineUnavailable,
    NetRunner,
    OnnxRunner,
    choose_engine,
    export_onnx,
    torch_runner,
)
from lookalike.embedder.errors import EmbedderError, ImageError, WeightsUnavailable
from lookalike.embedder.layers import POOLINGS
from lookalike.embedder.model import RetrievalNet
from lookalike.embedder.quantize import int8_id
from lookalike.embedder.spec import EmbedderSpec, draft_size, tta_sizes
from lookalike.embedder.tensor_decode import decode_jpegs, resize_tensor, tensor_decodable
from lookalike.embedder.transforms import (
    Decoded,
    ResizeMode,
    decode,
    normalise,
    to_uint8_batch,
)
from lookalike.embedder.whitening import PCAWhitening, WhiteningError

log = logging.getLogger("lookalike.embedder")
# Below this a stride-32 backbone has no feature map left to pool.
MIN_INPUT_PX = 32
MAX_SCALE = 2.0

Decoder = Literal["auto", "pil", "tensor"]


@dataclass(frozen=True, slots=True)
class EmbedderConfig:
    """How to build and run the embedder.

    `backbone` names one backbone, or an ensemble of several joined by `+`: each member sees
    the image at its own input size and the descriptor is their L2-normalised descriptors
    concatenated and normalised again (each member weighs the same); the class logits are the
    members' mean.
    """

    backbone: str = "efficientnet_lite0"
    weights: Path | None = None
    input_size: int = 0
    resize: ResizeMode = "squash"
    pooling: str = "gem"
    gem_p: float = 1.0
    # 0: the backbone family's default on the device (accel.tuned_batch_size).
    batch_size: int = 0
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
    precision: Precision = "auto"
    channels_last: Toggle = "auto"
    compile: bool = False
    # `tensor`: JPEGs decoded as tensors on the device (nvJPEG on CUDA); `auto`: on CUDA only,
    # since on the CPU PIL's reduced-scale JPEG decode is faster.
    decoder: Decoder = "auto"
    # One forward pass per input size at load, so the first request does not pay for
    # kernel selection, allocator growth or compilation.
    warmup: bool = True
    # What runs the network (see engines.py): auto is ONNX Runtime on the CPU in fp32 or int8,
    # torch otherwise.
    engine: EngineName = "auto"
    # Where exported ONNX graphs are kept between runs; None: exported at every load.
    cache_dir: Path | None = None
    # With precision int8: the int8 graph `lookalike quantize` made for this model.
    int8_model: Path | None = None

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; known: {', '.join(ENGINES)}")
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
    # The backbone's top-1 ImageNet class ("" when it has no classifier).
    category: str = ""

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


def category_names(classes: int) -> tuple[str, ...]:
    """Names of a classifier's outputs: ImageNet's 1,000 classes (torchvision's names, in the
    order every ImageNet head here uses), else `class_<i>`."""
    from torchvision.models import MobileNet_V2_Weights

    names = tuple(MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])
    if classes == len(names):
        return names
    return tuple(f"class_{i}" for i in range(classes))


@dataclass(frozen=True, slots=True)
class _Member:
    """One network of the embedder (an ensemble has several) with its input sizes, and what
    runs it."""

    backbone: Backbone
    net: nn.Module
    input_size: int
    # One per test-time scale.
    sizes: tuple[int, ...]
    dim: int
    classes: int
    run: NetRunner
    engine: str
    # The int8 graph's id ("" in float): part of the model spec, it is another embedding.
    quantization: str = ""


def _int8_runner(config: EmbedderConfig, sizes: tuple[int, ...], members: int,
                 width: int) -> tuple[NetRunner, str]:
    """The int8 graph of the config run by ONNX Runtime, and its id; EmbedderError when it is
    missing or made for another model."""
    if members > 1 or len(set(sizes)) > 1:
        raise EmbedderError("precision int8 takes one backbone at one input size (no ensemble, "
                            "test-time scales [1.0]); flip is fine")
    if config.int8_model is None:
        raise EmbedderError("precision int8 needs the int8 graph of the model: make one with "
                            "`lookalike quantize IMAGES_DIR` and set LOOKALIKE_MODEL__INT8_MODEL "
                            "to the file it writes")
    try:
        graph = config.int8_model.read_bytes()
    except OSError as exc:
        raise EmbedderError(f"cannot read the int8 graph {config.int8_model}: {exc}") from exc
    run = OnnxRunner.from_graph(graph, sizes[0], config.threads)
    try:
        fits = run(torch.zeros(1, 3, sizes[0], sizes[0])).shape[1] == width
    except Exception:  # ONNX Runtime refuses inputs of another size than the graph's
        fits = False
    if not fits:
        raise EmbedderError(f"the int8 graph {config.int8_model} was made for another model "
                            f"(not {sizes[0]} px inputs to {width} columns); make it again with "
                            "`lookalike quantize`")
    return run, int8_id(graph)


def _runner(config: EmbedderConfig, plan: AccelPlan, net: nn.Module, identity: dict[str, object],
            sizes: tuple[int, ...], members: int, width: int) -> tuple[NetRunner, str, str]:
    """What runs `net` (one of `members`, rows `width` wide) under the config's engine and
    precision, that engine's name, and the int8 graph's id ("" in float). `auto` falls back to
    torch, saying why, for a network ONNX Runtime cannot run; an explicit `onnxruntime` fails."""
    engine = choose_engine(config.engine, plan)
    if plan.int8:
        run, quantization = _int8_runner(config, sizes, members, width)
        return run, engine, quantization
    if engine == "onnxruntime":
        try:
            runner = OnnxRunner.build(net, identity, sizes, config.cache_dir, config.threads)
            return runner, engine, ""
        except EngineUnavailable as exc:
            if config.engine == "onnxruntime":
                raise
            log.warning("%s runs on torch: %s", identity["backbone"], exc)
    return torch_runner(net, plan), "torch", ""


def _build_members(config: EmbedderConfig, plan: AccelPlan) -> tuple[_Member, ...]:
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
    members = []
    for backbone in backbones:
        size = config.input_size or backbone.input_size
        sizes = check_tta(backbone, size, config.scales)
        retrieval = RetrievalNet(backbone, config.pooling, config.gem_p,
                                 semantic_weight=config.semantic_weight, logits=logits)
        net = prepare(retrieval, plan)
        # Everything the exported graph depends on besides the input size.
        identity: dict[str, object] = {
            "backbone": backbone.name, "weights": backbone.weights_id, "pooling": config.pooling,
            "gem_p": float(config.gem_p), "semantic_weight": float(config.semantic_weight),
            "logits": logits, "dim": retrieval.dim, "classes": retrieval.classes}
        width = retrieval.dim + (retrieval.classes if logits else 0)
        run, engine, quantization = _runner(config, plan, net, identity, sizes, len(backbones),
                                            width)
        members.append(_Member(backbone, net, size, sizes, retrieval.dim, retrieval.classes, run,
                               engine, quantization))
    if logits and len({m.classes for m in members}) > 1:
        raise EmbedderError(
            f"the members of ensemble {config.backbone!r} predict different numbers of classes "
            f"({', '.join(f'{m.backbone.name}: {m.classes}' for m in members)})"
        )
    return tuple(members)


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
        self._members: tuple[_Member, ...] = ()
        self._spec: EmbedderSpec | None = None
        self._raw_dim = 0
        self._categories: tuple[str, ...] = ()
        self.device = pick_device(config.device)
        self.plan: AccelPlan = plan_for(self.device, config.precision, config.channels_last,
                                        config.compile)
        self._feeder = DeviceFeeder(self.device)
        self.load_seconds = 0.0

    @property
    def batch_size(self) -> int:
        """Images per model batch: the configured size, or the family's default on the device
        for the engine the config picks (known without loading the model)."""
        return tuned_batch_size(self.config.backbone, self.device, self.config.batch_size,
                                self.config.input_size, choose_engine(self.config.engine, self.plan))

    @property
    def decodes_on_device(self) -> bool:
        """Whether `embed_bytes` decodes JPEGs as tensors on the device."""
        if self.config.decoder == "auto":
            return self.device.type == "cuda"
        return self.config.decoder == "tensor"

    def load(self) -> None:
        """Build the network, load its weights and warm it up; later calls do nothing."""
        with self._lock:
            if self._members:
                return
            started = time.perf_counter()
            config = self.config
            if config.threads:
                torch.set_num_threads(config.threads)
            members = _build_members(config, self.plan)
            dim = sum(m.dim for m in members)
            whitening = config.whitening
            if whitening is not None and whitening.input_dim != dim:
                raise WhiteningError(
                    f"whitening {whitening.id} was learned on {whitening.input_dim}-dimensional "
                    f"descriptors, but backbone {config.backbone!r} gives {dim}"
                )
            self._raw_dim = dim
            with_logits = all(m.backbone.head is not None for m in members)
            self._categories = category_names(members[0].classes) if with_logits else ()
            self._members = members
            self._spec = EmbedderSpec(
                backbone=ENSEMBLE_JOIN.join(m.backbone.name for m in members),
                weights=ENSEMBLE_JOIN.join(m.backbone.weights_id for m in members),
                pooling=config.pooling, gem_p=float(config.gem_p),
                # The largest member's: what inputs are decoded for (`draft_px`).
                input_size=max(m.input_size for m in members), resize=config.resize,
                whitening=whitening.id if whitening is not None else "none",
                dim=whitening.dim if whitening is not None else dim,
                decode_px=config.decode_px, scales=tuple(float(s) for s in config.scales),
                flip=config.flip, semantic_weight=float(config.semantic_weight),
                quantization=ENSEMBLE_JOIN.join(m.quantization for m in members
                                                 if m.quantization),
            )
        if config.warmup:
            self._warm_up()
        self.load_seconds = time.perf_counter() - started

    def _warm_up(self) -> None:
        # CUDA picks kernels per input shape, so warm up at the batch size requests will use.
        count = self.batch_size if self.device.type == "cuda" else 1
        size = self.spec.input_size
        grey = Image.new("RGB", (size, size), (128, 128, 128))
        self._collect(self._launch([grey] * count))
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
        self.load()
        return bool(self._categories)

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

    def embed_images(self, images: Sequence[Image.Image | torch.Tensor]) -> NDArray[np.float32]:
        """Descriptors N x D float32, L2-normalised, in input order, of RGB images: PIL images,
        or 3 x H x W uint8 tensors already on the device (from `decode_jpegs`).

        Batch i+1 is prepared on the host while the device still computes batch i (CUDA
        kernels run asynchronously), and its copy overlaps that compute on a side stream."""
        return self.embed_images_with_logits(images)[0]

    def embed_images_with_categories(
        self, images: Sequence[Image.Image | torch.Tensor]
    ) -> tuple[NDArray[np.float32], list[str]]:
        """`embed_images` and each image's predicted category from the same forward pass
        (all "" when the backbone has no classifier)."""
        vectors, logits = self.embed_images_with_logits(images)
        return vectors, self.categories_of(logits)

    def embed_images_with_logits(
        self, images: Sequence[Image.Image | torch.Tensor]
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """`embed_images` and the classifier's logits N x C from the same forward pass, C being
        `len(category_names)` (0 when the backbone has no classifier)."""
        self.load()
        step = self.batch_size
        chunks = (images[start:start + step] for start in range(0, len(images), step))
        return self._split(np.concatenate([self._empty(), *self._embed_chunks(chunks)]))

    @property
    def category_names(self) -> tuple[str, ...]:
        """The classifier's class names, in logit order (empty without one; loads the model)."""
        self.load()
        return self._categories

    def categories_of(self, logits: NDArray[np.float32]) -> list[str]:
        """The top-1 class name of each row of logits ("" each without a classifier)."""
        if not self._categories:
            return [""] * len(logits)
        return [self._categories[int(i)] for i in np.argmax(logits, axis=1)]

    def _embed_chunks(
        self, chunks: Iterable[Sequence[Image.Image | torch.Tensor]]
    ) -> Iterator[NDArray[np.float32]]:
        """Raw descriptors of each chunk, in order (an empty chunk gives 0 x D). Chunk i+1 is
        prepared and launched before chunk i's result is fetched."""
        pending: deque[torch.Tensor | None] = deque()
        for chunk in chunks:
            pending.append(self._launch(chunk) if len(chunk) else None)
            if len(pending) > 1:
                yield self._collect(pending.popleft())
        while pending:
            yield self._collect(pending.popleft())

    def _empty(self) -> NDArray[np.float32]:
        assert self._members
        return np.zeros((0, self._raw_dim + len(self._categories)), dtype=np.float32)

    def _split(self, rows: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Raw rows (descriptor, then logits) -> whitened descriptors and the logits."""
        vectors = rows[:, :self._raw_dim]
        if self.config.whitening is not None:
            vectors = self.config.whitening.apply(vectors)
        return (np.ascontiguousarray(vectors, dtype=np.float32),
                np.ascontiguousarray(rows[:, self._raw_dim:], dtype=np.float32))

    def _launch(self, images: Sequence[Image.Image | torch.Tensor]) -> torch.Tensor:
        """One batch through every member's test-time passes: the descriptor (an ensemble's
        members' joined and normalised), then the class logits where there is a classifier;
        left on the device."""
        with torch.inference_mode():
            passes = [self._member_launch(i, images) for i in range(len(self._members))]
            if len(passes) == 1:
                total, logits = passes[0]
            else:
                # Each member's part is unit-norm, so each weighs the same in the joined one.
                total = LF.l2n(torch.cat([part.float() for part, _ in passes], dim=1))
                logits = torch.stack([part.float() for _, part in passes]).mean(dim=0)
            if not self._categories:
                return total
            return torch.cat([total.float(), logits.float()], dim=1)

    def _member_launch(
        self, index: int, images: Sequence[Image.Image | torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One member's test-time passes: the sum of its L2-normalised passes, normalised, and
        its summed logits (N x 0 without a classifier)."""
        member = self._members[index]
        total: torch.Tensor | None = None
        logits: torch.Tensor | None = None
        for size in member.sizes:
            pixels = self.pixels(images, size, member=index)
            for view in (pixels, pixels.flip(-1)) if self.config.flip else (pixels,):
                out = self.forward(view, member=index)
                descriptors, view_logits = out[:, :member.dim], out[:, member.dim:]
                total = descriptors if total is None else total + descriptors
                logits = view_logits if logits is None else logits + view_logits
        assert total is not None
        assert logits is not None
        # One fp32 pass is already normalised: leaving it alone keeps the plain path
        # bit-exact. Reduced precision is normalised again in fp32.
        if len(member.sizes) > 1 or self.config.flip or self.plan.dtype is not None:
            total = LF.l2n(total.float())
        return total, logits

    def onnx_graph(self, member: int = 0) -> bytes:
        """A member's network exported to ONNX at its input size (fp32, padding folded): what
        ONNX Runtime runs, and what `lookalike quantize` starts from."""
        self.load()
        chosen = self._members[member]
        return export_onnx(chosen.net, chosen.input_size)

    @property
    def engine(self) -> str:
        """What runs the network: `onnxruntime` or `torch` (an ensemble whose members run on
        both: their names joined by `+`, in member order); loads the model."""
        self.load()
        return ENSEMBLE_JOIN.join(dict.fromkeys(m.engine for m in self._members))

    @property
    def members(self) -> tuple[str, ...]:
        """The backbone name of each network, in descriptor order: one, or an ensemble's
        members (loads the model)."""
        self.load()
        return tuple(m.backbone.name for m in self._members)

    def pixels(self, images: Sequence[Image.Image | torch.Tensor], size: int = 0,
               member: int = 0) -> torch.Tensor:
        """The normalised N x 3 x size x size batch `forward` takes for one member (the only
        one but for an ensemble), on the device, in the plan's memory format (size 0: that
        member's input size)."""
        self.load()
        chosen = self._members[member]
        return normalise(self._resized(images, size or chosen.input_size),
                         chosen.backbone.mean, chosen.backbone.std, self.plan.channels_last)

    def forward(self, pixels: torch.Tensor, member: int = 0) -> torch.Tensor:
        """One member's network alone on a normalised N x 3 x H x W batch on the device, under
        the plan's precision; asynchronous on CUDA (the result is ready once read). Rows are
        the member's raw descriptor, then its class logits where it has a classifier."""
        self.load()
        with self._lock:
            return self._members[member].run(pixels)

    def _resized(self, images: Sequence[Image.Image | torch.Tensor], size: int) -> torch.Tensor:
        """N x size x size x 3 uint8 on the device: PIL images resized on the host and copied,
        device tensors resized where they are."""
        mode = self.config.resize
        on_host = [im for im in images if isinstance(im, Image.Image)]
        host_rows = self._feeder.to_device(to_uint8_batch(on_host, size, mode)) if on_host else None
        if len(on_host) == len(images) and host_rows is not None:
            return host_rows
        from_host = iter(host_rows if host_rows is not None else ())
        return torch.stack([
            next(from_host) if isinstance(im, Image.Image)
            else resize_tensor(im.to(self.device), size, mode)
            for im in images
        ])

    def _collect(self, descriptors: torch.Tensor | None) -> NDArray[np.float32]:
        if descriptors is None:
            return self._empty()
        return np.asarray(descriptors.float().cpu().numpy(), dtype=np.float32)

    def embed_bytes(self, blobs: Sequence[bytes]) -> list[EmbedOutcome]:
        """One outcome per encoded image, in order; a bad image fails alone.

        With `decodes_on_device`, each batch's JPEGs are decoded together on the device while
        the previous batch computes; other formats and files the tensor decoder refuses go
        through PIL, which names what is wrong with a bad one."""
        self.load()
        step = self.batch_size
        errors: list[list[ImageError | None]] = []

        def chunks() -> Iterator[list[Image.Image | torch.Tensor]]:
            for start in range(0, len(blobs), step):
                decoded = self._decode_chunk(blobs[start:start + step])
                # Only the errors are kept: the decoded pixels are freed once launched.
                errors.append([d if isinstance(d, ImageError) else None for d in decoded])
                yield [d for d in decoded if not isinstance(d, ImageError)]

        vectors, logits = self._split(
            np.concatenate([self._empty(), *self._embed_chunks(chunks())]))
        categories = self.categories_of(logits)
        embedded = iter(zip(vectors, categories, strict=True))
        outcomes = []
        for error in (error for chunk_errors in errors for error in chunk_errors):
            if error is not None:
                outcomes.append(EmbedOutcome(error=error))
            else:
                vector, category = next(embedded)
                outcomes.append(EmbedOutcome(vector=vector, category=category))
        return outcomes

    def _decode_chunk(self, blobs: Sequence[bytes]) -> list[Image.Image | torch.Tensor | ImageError]:
        on_device: dict[int, torch.Tensor] = {}
        if self.decodes_on_device:
            picks = [i for i, data in enumerate(blobs)
                     if tensor_decodable(data, self.config.max_pixels)]
            for i, tensor in zip(picks, decode_jpegs([blobs[i] for i in picks], self.device),
                                 strict=True):
                if tensor is not None:
                    on_device[i] = tensor
        out: list[Image.Image | torch.Tensor | ImageError] = []
        for i, data in enumerate(blobs):
            if i in on_device:
                out.append(on_device[i])
                continue
            try:
                out.append(self.decode(data))
            except ImageError as exc:
                out.append(exc)
        return out
