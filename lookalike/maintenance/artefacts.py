"""Model artefacts learned on a collection (whitening, hash codes) kept in the blob store under
their content id, and read back with a clear error when missing or unusable."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray

from lookalike.core.blob_store import BlobStore
from lookalike.core.errors import ConfigError, NotFound
from lookalike.core.vector_store import MilvusVectorStore, VectorField


class Artefact(Protocol):
    """Something learned and stored under its content id."""

    @property
    def id(self) -> str:
        """Its content id."""
        ...


A = TypeVar("A", bound=Artefact)


def sample_vectors(
    store: MilvusVectorStore, field: VectorField, max_samples: int, batch_size: int
) -> NDArray[np.float32]:
    """Up to `max_samples` stored vectors of `field` to learn on, evenly spread over the
    collection in id order (all of them when it holds fewer); 0 x 0 when it is empty."""
    count = store.count()
    wanted = min(count, max(max_samples, 0))
    parts: list[NDArray[np.float32]] = []
    seen = 0
    for _, (vectors,) in store.iter_vectors((field,), batch_size):
        rows = np.arange(seen, seen + len(vectors))
        # Row i is taken when floor(i * wanted / count) steps: exactly `wanted` rows in all.
        taken = (rows + 1) * wanted // max(count, 1) > rows * wanted // max(count, 1)
        parts.append(vectors[taken])
        seen += len(vectors)
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def load_artefact(
    blobs: BlobStore, key: str, artefact_id: str, parse: Callable[[bytes], A],
    parse_error: type[Exception], kind: str, missing_hint: str,
) -> A:
    """The artefact `artefact_id` stored at `key`; ConfigError naming the key when it is missing
    (with `missing_hint`), unreadable, or holds another artefact."""
    try:
        artefact = parse(blobs.get(key))
    except NotFound:
        raise ConfigError(
            f"the collection uses {kind} {artefact_id}, but the blob store has no {key!r}: "
            f"{missing_hint}"
        ) from None
    except parse_error as exc:
        raise ConfigError(f"blob {key!r} is not a {kind} artefact: {exc}") from exc
    if artefact.id != artefact_id:
        raise ConfigError(f"blob {key!r} holds {kind} {artefact.id}, not {artefact_id}")
    return artefact
