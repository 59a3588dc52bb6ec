"""What produced a descriptor: stored with every collection and checked on every open."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

SPEC_VERSION = 2


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
    version: int = SPEC_VERSION

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of the spec."""
        return asdict(self)
