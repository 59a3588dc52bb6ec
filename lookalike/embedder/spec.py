"""What produced a descriptor: stored with every collection and checked on every open."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

# 3: test-time augmentation (scales, flip) and the semantic weight joined the spec.
SPEC_VERSION = 3


def tta_sizes(input_size: int, scales: Sequence[float]) -> tuple[int, ...]:
    """The input size of each test-time scale: round(input_size * scale), in order."""
    return tuple(round(input_size * s) for s in scales)


def draft_size(decode_px: int, input_size: int, scales: Sequence[float]) -> int:
    """The JPEG draft size inputs are decoded at: `decode_px`, raised to the largest test-time
    input size so that no pass upsamples a drafted image; 0 (full size) when `decode_px` is 0."""
    return max(decode_px, *tta_sizes(input_size, scales)) if decode_px else 0


@dataclass(frozen=True, slots=True)
class EmbedderSpec:
    """The model spec: two descriptors are comparable only when their specs are equal."""

    backbone: str
    weights: str
    pooling: str
    gem_p: float
    input_size: int
    resize: str
    whitening: str
    dim: int
    decode_px: int = 0
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    semantic_weight: float = 0.0
    version: int = SPEC_VERSION
    # "int8-<hash of the int8 graph>" for an int8 model (another embedding); "" in float, and
    # then left out of the dict, so specs stored before it existed still compare equal.
    quantization: str = ""

    def draft_px(self) -> int:
        """The JPEG draft size this model's inputs are decoded at (see `draft_size`)."""
        return draft_size(self.decode_px, self.input_size, self.scales)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of the spec, keys in field order (scales as a list)."""
        spec = asdict(self)
        spec["scales"] = [float(s) for s in self.scales]
        if not self.quantization:
            del spec["quantization"]
        return spec
