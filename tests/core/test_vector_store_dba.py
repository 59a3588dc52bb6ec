"""Raw descriptors, row iteration and collection versions of the Milvus store, on Milvus Lite."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from lookalike.core.errors import ConfigError, InvalidArgument
from lookalike.core.schemas import ImageMeta, ImageRecord
from lookalike.core.settings import MilvusSettings
from lookalike.core.vector_store import (
    DbaParams,
    MilvusVectorStore,
    live_collection_spec,
    physical_name,
)

SPEC = {"backbone": "test", "whitening": "none", "dim": 8}
DIM = 8
DBA = DbaParams(k=3, alpha=3.0)


def records(n: int, dim: int = DIM, seed: int = 0) -> list[ImageRecord]:
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


def test_raw_field_only_with_dba(client: Any) -> None:
    """A DBA collection keeps raw = embedding on insert and records its parameters; others not."""
    plain = MilvusVectorStore.open(client, "plain", SPEC, DIM, MilvusSettings())
    assert not plain.has_raw()
    assert plain.dba_params() is None
    with pytest.raises(ConfigError, match=r"'plain' \(plain__\w+\) keeps no raw descriptors"):
        plain.get_raw_vectors([1])
    store = MilvusVectorStore.open(client, "augmented", SPEC, DIM, MilvusSettings(), dba=DBA)
    assert store.has_raw()
    assert store.dba_params() == DBA
    stored = records(5)
    store.insert(stored)
    raw = store.get_raw_vectors([r.meta.id for r in stored] + [999])
    assert raw[-1] is None
    for record, vector in zip(stored, raw[:-1], strict=True):
        assert vector is not None
        np.testing.assert_array_equal(vector, record.embedding)
    store.set_dba_params(DbaParams(k=5, alpha=1.0))
    assert store.dba_params() == DbaParams(k=5, alpha=1.0)


def test_search_raw_is_exact_and_returns_vectors(client: Any) -> None:
    """search_raw ranks by inner product on raw, with the stored raw vectors."""
    store = MilvusVectorStore.open(client, "augmented", SPEC, DIM, MilvusSettings(), dba=DBA)
    stored = records(30)
    store.insert(stored)
    database = np.stack([r.embedding for r in stored])
    ids = np.array([r.meta.id for r in stored])
    found = store.search_raw(database[:4], top_k=5)
    assert len(found) == 4
    for query, neighbours in zip(database[:4], found, strict=True):
        sims = database @ query
        order = np.argsort(-sims)[:5]
        np.testing.assert_array_equal(neighbours.ids, ids[order])
        np.testing.assert_allclose(neighbours.scores, sims[order], atol=1e-5)
        np.testing.assert_allclose(neighbours.vectors, database[order], atol=1e-6)
    with pytest.raises(InvalidArgument):
        store.search_raw(database[:1], top_k=0)


def test_upsert_embeddings_keeps_metadata_and_raw(client: Any) -> None:
    """Replacing embeddings rewrites rows whole: metadata and raw survive; gone ids stay gone."""
    store = MilvusVectorStore.open(client, "augmented", SPEC, DIM, MilvusSettings(), dba=DBA)
    stored = records(6)
    store.insert(stored)
    ids = [r.meta.id for r in stored[:3]] + [12345]
    new = np.eye(DIM, dtype=np.float32)[:4]
    assert store.upsert_embeddings(ids, new) == 3
    assert store.count() == 6
    assert store.get([r.meta.id for r in stored]) == [r.meta for r in stored]
    vectors = store.get_vectors(ids[:3])
    for vector, expected in zip(vectors, new[:3], strict=True):
        assert vector is not None
        np.testing.assert_array_equal(vector, expected)
    raw = store.get_raw_vectors(ids[:3])
    for vector, record in zip(raw, stored[:3], strict=True):
        assert vector is not None
        np.testing.assert_array_equal(vector, record.embedding)
    assert store.get([12345]) == [None]
    with pytest.raises(InvalidArgument):
        store.upsert_embeddings([1, 2], new[:1])


def test_iteration_in_batches(client: Any) -> None:
    """Ids, vectors and records come back whole, in id order, in batches of the size asked."""
    store = MilvusVectorStore.open(client, "augmented", SPEC, DIM, MilvusSettings(), dba=DBA)
    stored = records(23)
    store.insert(stored)
    batches = list(store.iter_ids(batch_size=10))
    assert [len(b) for b in batches] == [10, 10, 3]
    assert [i for b in batches for i in b] == sorted(r.meta.id for r in stored)
    assert [i for b in store.iter_ids("ingested_at >= 120") for i in b] == [21, 22, 23]
    by_id = {r.meta.id: r for r in stored}
    for ids, (embedding, raw) in store.iter_vectors(("embedding", "raw"), batch_size=7):
        assert embedding.shape == raw.shape == (len(ids), DIM)
        np.testing.assert_array_equal(embedding, np.stack([by_id[i].embedding for i in ids]))
    seen = [r for batch in store.iter_records("raw", batch_size=8) for r in batch]
    assert [r.meta for r in seen] == [by_id[r.meta.id].meta for r in seen]
    assert len(seen) == 23


def test_versions_swap_atomically_and_the_old_one_stays(client: Any) -> None:
    """A new version is filled aside, then served under the alias; the old one is kept."""
    store = MilvusVectorStore.open(client, "images", SPEC, DIM, MilvusSettings())
    store.insert(records(4))
    old = store.live_collection()
    new_spec = {**SPEC, "whitening": "w1", "dim": 4}
    version = store.create_version(new_spec, 4)
    assert version.name == physical_name("images", new_spec)
    assert store.count() == 4
    version.insert(records(3, dim=4, seed=1))
    assert live_collection_spec(client, "images") == SPEC
    store.point_alias(version.name)
    assert store.live_collection() == version.name
    assert store.stored_spec() == new_spec
    assert live_collection_spec(client, "images") == new_spec
    assert store.count() == 3
    assert client.has_collection(old)
    with pytest.raises(ConfigError, match="already serves"):
        store.create_version(new_spec, 4)
    with pytest.raises(InvalidArgument):
        store.point_alias("other__abc")
    assert live_collection_spec(client, "missing") is None
    reopened = MilvusVectorStore.open(client, "images", new_spec, 4, MilvusSettings())
    assert reopened.count() == 3
    assert MilvusVectorStore.attach(client, "images", MilvusSettings()).stored_spec() == new_spec
    with pytest.raises(ConfigError, match="does not exist"):
        MilvusVectorStore.attach(client, "missing", MilvusSettings())


def test_an_interrupted_version_is_rebuilt(client: Any) -> None:
    """A version nothing serves (left by an interrupted run) is dropped and created empty."""
    store = MilvusVectorStore.open(client, "images", SPEC, DIM, MilvusSettings())
    new_spec = {**SPEC, "whitening": "w2"}
    store.create_version(new_spec, DIM).insert(records(2))
    again = store.create_version(new_spec, DIM, DBA)
    assert again.count() == 0
    assert again.has_raw()
