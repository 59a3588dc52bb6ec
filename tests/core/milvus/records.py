"""Records and stores the Milvus layer's tests share, on Milvus Lite."""

from __future__ import annotations

from typing import Any

import numpy as np

from lookalike.core.schemas import ImageMeta, ImageRecord
from lookalike.core.settings import MilvusSettings
from lookalike.core.vector_store import DbaParams, MilvusVectorStore

SPEC = {"backbone": "test", "dim": 8}
# The spec of the tests of DBA collections and versions: one a re-index would whiten.
DBA_SPEC = {"backbone": "test", "whitening": "none", "dim": 8}
DIM = 8
DBA = DbaParams(k=3, alpha=3.0)


def numbered(n: int, seed: int = 0) -> list[ImageRecord]:
    """`n` records with unit random vectors, ids 1..n, labels "even" and "odd" by position."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [
        ImageRecord(
            meta=ImageMeta(id=i + 1, sha256=f"{i:064x}", blob_key=f"images/{i}.jpg",
                           source=f"/src/{i}.jpg", label="even" if i % 2 == 0 else "odd",
                           tags=("t",), meta={"n": i}, width=10, height=20, ingested_at=1),
            embedding=vectors[i],
        )
        for i in range(n)
    ]


def distinct(n: int, dim: int = DIM, seed: int = 0) -> list[ImageRecord]:
    """`n` records with unit random vectors and distinct metadata."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [
        ImageRecord(
            meta=ImageMeta(id=seed * 1000 + i + 1, sha256=f"{seed * 1000 + i:064x}",
                           blob_key=f"images/{i}.jpg", source=f"/src/{seed}/{i}.jpg",
                           label=f"l{i % 3}", tags=("a", f"t{i}"), meta={"n": i, "seed": seed},
                           width=10 + i, height=20 + i, ingested_at=100 + i),
            embedding=vectors[i],
        )
        for i in range(n)
    ]


def scattered(n: int, seed: int = 3) -> list[ImageRecord]:
    """`n` records with random 62-bit ids (as content ids are), labels l0..l6 and "" for some."""
    rng = np.random.default_rng(seed)
    ids = rng.choice(2**62, size=n, replace=False)
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [
        ImageRecord(
            meta=ImageMeta(id=int(ids[i]), sha256=f"{i:064x}", blob_key=f"images/{i}.jpg",
                           source=f"/src/{i}.jpg", label="" if i % 9 == 0 else f"l{i % 7}",
                           tags=("t",), meta={}, width=1, height=1, ingested_at=i),
            embedding=vectors[i],
        )
        for i in range(n)
    ]


def store_with(client: Any, records: list[ImageRecord], batches: int = 4,
               **settings: Any) -> MilvusVectorStore:
    """A store "images" holding `records`, inserted and flushed in `batches`."""
    store = MilvusVectorStore.open(client, "images", SPEC, DIM, MilvusSettings(**settings))
    step = -(-len(records) // batches)
    for start in range(0, len(records), step):
        store.insert(records[start:start + step])
        client.flush(store.live_collection())
    return store
