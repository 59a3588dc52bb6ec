"""Database-side augmentation (DBA) kept in Milvus, always computed from the raw descriptors.

A DBA collection keeps each image's descriptor in `raw`; its searched `embedding` is `raw`
averaged with its k nearest raw neighbours (core/rerank.py), found by exact searches on `raw`
in batches, so no N x N matrix is ever built. Every recomputation starts from `raw`: running it
again leaves the same vectors.

After an ingest, the new images and their k nearest neighbours are recomputed. A stored image
whose neighbour list a new image enters is nearly always among that image's own k nearest (the
relation is close to symmetric at this depth); `lookalike dba --all` recomputes every row exactly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from lookalike.core.errors import ConfigError
from lookalike.core.iterables import chunks
from lookalike.core.rerank import neighbour_average
from lookalike.core.vector_store import DbaParams, RawNeighbours, VectorField

BATCH_SIZE = 256


class DbaStore(Protocol):
    """What DBA needs from a collection that keeps raw descriptors."""

    name: str

    def require_raw(self) -> None:
        """Raise ConfigError unless the collection keeps raw descriptors."""
        ...

    def dba_params(self) -> DbaParams | None:
        """The DBA parameters recorded with the collection."""
        ...

    def set_dba_params(self, params: DbaParams) -> None:
        """Record the DBA parameters the embeddings were computed with."""
        ...

    def get_raw_vectors(self, ids: Sequence[int]) -> list[NDArray[np.float32] | None]:
        """Raw descriptor per id, in order; None where the id is not stored."""
        ...

    def search_raw(self, vectors: NDArray[np.float32], top_k: int) -> list[RawNeighbours]:
        """Exact nearest raw descriptors per query vector, with their vectors."""
        ...

    def upsert_embeddings(self, ids: Sequence[int], vectors: NDArray[np.float32]) -> int:
        """Replace the embedding of the stored `ids`; how many were updated."""
        ...

    def iter_ids(self, filter_expr: str = "", batch_size: int = 1000) -> Iterator[list[int]]:
        """Stored ids, in batches."""
        ...

    def iter_vectors(
        self, fields: Sequence[VectorField], batch_size: int = 1000
    ) -> Iterator[tuple[list[int], list[NDArray[np.float32]]]]:
        """Ids and one matrix per vector field, in batches."""
        ...

    def seal(self, timeout_s: float = 600.0, *, strict: bool = True) -> bool:
        """Flush what was written and wait until the indexes cover it; whether they do."""
        ...


def dba_for(store: DbaStore, wanted: DbaParams | None) -> DbaParams | None:
    """The DBA to keep up on `store`: the one recorded with it, which `wanted` must match.

    None when the collection does not do DBA and none is wanted; ConfigError when DBA is wanted
    on a collection without raw descriptors, or with other parameters than it was computed with.
    """
    recorded = store.dba_params()
    if wanted is None or recorded == wanted:
        return recorded
    store.require_raw()
    if recorded is None:
        return wanted
    raise ConfigError(
        f"collection {store.name!r} is augmented with k={recorded.k}, alpha={recorded.alpha}, "
        f"but the settings ask for k={wanted.k}, alpha={wanted.alpha}: run `lookalike dba --all` "
        "to recompute it with the settings' parameters, or set retrieval.dba_k and "
        "retrieval.dba_alpha to the collection's"
    )


def augmented(
    raw: NDArray[np.float32], ids: Sequence[int], neighbours: Sequence[RawNeighbours], k: int,
    alpha: float,
) -> NDArray[np.float32]:
    """N x D `raw` averaged with up to `k` of its `neighbours` each, the row itself left out.

    Rows with fewer than `k` neighbours (a small collection) are padded with zero vectors of
    similarity 0, which add nothing, as `rerank.dba` then uses fewer neighbours.
    """
    n, dim = raw.shape
    neighbour_vectors = np.zeros((n, k, dim), dtype=np.float32)
    sims = np.zeros((n, k), dtype=np.float32)
    for row, (own_id, found) in enumerate(zip(ids, neighbours, strict=True)):
        # Searched k + 1 deep: the row finds itself, unless k others tie with it.
        others = found.ids != own_id
        vectors, scores = found.vectors[others][:k], found.scores[others][:k]
        neighbour_vectors[row, :len(vectors)] = vectors
        sims[row, :len(scores)] = scores
    return neighbour_average(raw, neighbour_vectors, sims, alpha)


def _recompute(
    store: DbaStore, ids: Sequence[int], k: int, alpha: float, batch_size: int
) -> tuple[int, set[int]]:
    """Recompute the embeddings of `ids`; rows updated, and the neighbour ids met on the way."""
    updated = 0
    met: set[int] = set()
    for chunk in chunks(ids, batch_size):
        stored = [(i, v) for i, v in zip(chunk, store.get_raw_vectors(chunk), strict=True)
                  if v is not None]
        if not stored:
            continue
        stored_ids = [i for i, _ in stored]
        raw = np.stack([v for _, v in stored])
        found = store.search_raw(raw, k + 1)
        updated += store.upsert_embeddings(stored_ids, augmented(raw, stored_ids, found, k, alpha))
        met.update(int(i) for neighbours in found for i in neighbours.ids)
    return updated, met


def apply_dba(
    store: DbaStore, new_ids: Sequence[int], k: int, alpha: float, batch_size: int = BATCH_SIZE
) -> int:
    """Augment the newly stored `new_ids` and their k nearest neighbours; rows updated."""
    store.require_raw()
    new = sorted({int(i) for i in new_ids})
    updated, met = _recompute(store, new, k, alpha, batch_size)
    more, _ = _recompute(store, sorted(met - set(new)), k, alpha, batch_size)
    return updated + more


def apply_dba_all(store: DbaStore, k: int, alpha: float, batch_size: int = BATCH_SIZE) -> int:
    """Recompute every embedding of the collection and record the parameters; rows updated."""
    store.require_raw()
    # Ids first, then the writes: upserts never run under an open iterator of the same rows.
    ids = [i for chunk in store.iter_ids(batch_size=max(batch_size, 1000)) for i in chunk]
    updated, _ = _recompute(store, ids, k, alpha, batch_size)
    store.set_dba_params(DbaParams(k=k, alpha=alpha))
    return updated


def ids_ingested_since(store: DbaStore, ingested_at: int) -> list[int]:
    """Ids of the images stored at or after `ingested_at` (unix seconds)."""
    return [i for chunk in store.iter_ids(f"ingested_at >= {int(ingested_at)}") for i in chunk]


def unaugmented_ids(store: DbaStore, batch_size: int = 1000) -> list[int]:
    """Ids whose embedding is still their raw descriptor (stored but not augmented yet).

    Images stored through the API, or by an ingest stopped before its DBA step, are such; so is
    an image with no neighbour of positive similarity, for which augmenting changes nothing.
    """
    store.require_raw()
    pending: list[int] = []
    for ids, (embedding, raw) in store.iter_vectors(("embedding", "raw"), batch_size):
        same = np.abs(embedding - raw).max(axis=1) <= 1e-6
        pending.extend(i for i, s in zip(ids, same, strict=True) if s)
    return pending
