"""What the embedder gives back for each encoded image: its descriptor, or why it has none."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from lookalike.embedder.errors import ImageError


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


def outcomes(errors: Sequence[ImageError | None], vectors: NDArray[np.float32],
             categories: Sequence[str]) -> list[EmbedOutcome]:
    """One outcome per input, in order: its decode error, or else the next embedded row (rows
    and categories hold one entry per input without an error)."""
    embedded = iter(zip(vectors, categories, strict=True))
    results = []
    for error in errors:
        if error is not None:
            results.append(EmbedOutcome(error=error))
        else:
            vector, category = next(embedded)
            results.append(EmbedOutcome(vector=vector, category=category))
    return results
