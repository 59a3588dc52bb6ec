"""How to build and run the embedder: one frozen record, checked when it is made. The model
side (ensemble.py) reads what network it describes, the session side (session.py) where and how
that network runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lookalike.embedder.accel import Precision, Toggle
from lookalike.embedder.engines import ENGINES, EngineName
from lookalike.embedder.layers import POOLINGS
from lookalike.embedder.transforms import ResizeMode
from lookalike.embedder.whitening import PCAWhitening

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
