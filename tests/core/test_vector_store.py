"""The Milvus vector store's facade against real Milvus Lite: a round trip through it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from lookalike.core.errors import InvalidArgument
from lookalike.core.settings import MilvusSettings
from lookalike.core.vector_store import MilvusVectorStore
from tests.core.milvus.records import DIM, SPEC, numbered


def test_insert_search_get_round_trip(client: Any) -> None:
    """A stored vector finds itself first with score ~1, with its metadata intact."""
    store = MilvusVectorStore.open(client, "images", SPEC, DIM, MilvusSettings())
    records = numbered(20)
    store.insert(records)
    assert store.count() == 20
    hits = store.search(np.stack([records[3].embedding]), top_k=5)[0]
    assert hits[0].image == records[3].meta
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert store.get([4, 999]) == [records[3].meta, None]
    vectors = store.get_vectors([4])
    assert vectors[0] is not None
    np.testing.assert_allclose(vectors[0], records[3].embedding, atol=1e-6)
    assert store.existing_ids([1, 2, 999]) == {1, 2}


def test_range_search_delete_and_describe(client: Any) -> None:
    """min_score keeps only closer hits; delete removes vectors; describe reports the collection."""
    store = MilvusVectorStore.open(client, "images", SPEC, DIM, MilvusSettings())
    records = numbered(20)
    store.insert(records)
    query = np.stack([records[0].embedding])
    everything = store.search(query, top_k=20)[0]
    threshold = everything[3].score
    close = store.search(query, top_k=20, min_score=threshold)[0]
    assert [h.image.id for h in close] == [h.image.id for h in everything[:3]]
    assert all(h.score > threshold for h in close)
    assert len(store.ids_matching('label == "odd"')) == 10
    assert store.delete([1, 2, 999]) == 2
    assert store.count() == 18
    assert store.get([1]) == [None]
    info = store.describe()
    assert (info.name, info.count, info.index_type, info.metric_type) == ("images", 18, "HNSW", "IP")
    assert info.physical_name.startswith("images__")
    assert info.spec == SPEC
    with pytest.raises(InvalidArgument, match="filter expression is required"):
        store.ids_matching(" ")
