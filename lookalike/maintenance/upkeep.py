"""Collection upkeep: near-duplicate pairs by range search, and deletes in the safe order."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from lookalike.core.blob_store import BlobStore
from lookalike.core.errors import InvalidArgument
from lookalike.core.vector_store import MAX_TOP_K, VectorStore

MAX_ID = (1 << 63) - 1  # ids are 63-bit, non-negative INT64


@dataclass(frozen=True, slots=True)
class DuplicatePair:
    """Two stored images whose descriptors' cosine similarity is above the threshold."""

    first: int
    second: int
    score: float


def all_ids(store: VectorStore, page: int = MAX_TOP_K) -> Iterator[int]:
    """Every stored id, by id ranges small enough for one query each (no ordering assumed)."""
    ranges = [(0, MAX_ID)]  # inclusive bounds
    while ranges:
        low, high = ranges.pop()
        ids = store.ids_matching(f"id >= {low} and id <= {high}", limit=page)
        if len(ids) < page or low == high:
            yield from sorted(ids)
            continue
        middle = (low + high) // 2
        ranges += [(middle + 1, high), (low, middle)]


def near_duplicates(
    store: VectorStore, threshold: float, batch_size: int = 256, max_per_image: int = 64
) -> Iterator[DuplicatePair]:
    """Pairs scoring above `threshold`, each once (first < second), by one range search per image.

    Queries go `batch_size` stored vectors at a time; at most `max_per_image` neighbours of
    each image are considered. Memory stays O(batch), never N x N.
    """
    if not -1.0 <= threshold < 1.0:
        raise InvalidArgument(f"threshold must be in [-1, 1), got {threshold}")
    ids = all_ids(store)
    while batch := [i for _, i in zip(range(batch_size), ids, strict=False)]:
        vectors = store.get_vectors(batch)
        present = [(i, v) for i, v in zip(batch, vectors, strict=True) if v is not None]
        if not present:
            continue
        queries = np.stack([v for _, v in present]).astype(np.float32)
        results = store.search_ids(queries, top_k=max_per_image + 1, min_score=threshold)
        for (query_id, _), hits in zip(present, results, strict=True):
            for hit in hits:
                if hit.id > query_id:
                    yield DuplicatePair(query_id, hit.id, hit.score)


def delete_images(store: VectorStore, blobs: BlobStore, ids: Sequence[int]) -> int:
    """Remove images, vectors first, then blobs (original, thumbnail, features); how many were stored.

    In this order a crash leaves at worst an orphan blob, never a vector without its blob. An
    image ingested without verification has no features blob; deleting it is a no-op.
    """
    removed = 0
    for start in range(0, len(ids), 1000):
        chunk = list(ids[start:start + 1000])
        metas = [m for m in store.get(chunk) if m is not None]
        removed += store.delete([m.id for m in metas])
        for meta in metas:
            blobs.delete(meta.blob_key)
            blobs.delete(meta.thumb_key)
            blobs.delete(meta.features_key)
    return removed


def delete_matching(store: VectorStore, blobs: BlobStore, filter_expr: str) -> int:
    """Delete every image that matches a filter expression (page by page); how many."""
    removed = 0
    while ids := store.ids_matching(filter_expr):
        deleted = delete_images(store, blobs, ids)
        if deleted == 0:
            break
        removed += deleted
    return removed
