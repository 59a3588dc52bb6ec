"""Every search mode of the Milvus store on Milvus Lite, and the exact re-scoring it uses."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from lookalike.core.errors import ConfigError, InvalidArgument, InvalidFilter
from lookalike.core.milvus.search import best_of, first_of_each
from lookalike.core.milvus.vector_index import SearchParams
from lookalike.core.settings import MilvusSettings
from lookalike.core.vector_store import MilvusVectorStore
from tests.core.milvus.records import DBA, DBA_SPEC, DIM, SPEC, distinct, numbered


def test_filter_and_exclusion(client: Any) -> None:
    """Filters restrict results; excluded ids never come back; a bad filter is a clear error."""
    store = MilvusVectorStore.open(client, "images", SPEC, DIM, MilvusSettings())
    records = numbered(20)
    store.insert(records)
    query = np.stack([records[0].embedding])
    hits = store.search(query, top_k=20, filter_expr='label == "odd"')[0]
    assert hits
    assert all(h.image.label == "odd" for h in hits)
    hits = store.search(query, top_k=20, exclude_ids=[1])[0]
    assert 1 not in {h.image.id for h in hits}
    assert len(hits) == 19
    with pytest.raises(InvalidFilter, match="label = = 3"):
        store.search(query, top_k=5, filter_expr="label = = 3")


def test_flat_index_builds_and_answers(client: Any) -> None:
    """The index type comes from settings."""
    store = MilvusVectorStore.open(client, "flat", SPEC, DIM, MilvusSettings(index_type="FLAT"))
    records = numbered(5)
    store.insert(records)
    assert store.search(np.stack([records[2].embedding]), top_k=1)[0][0].image.id == 3


def test_lite_routed_search_over_label_partitions(client: Any) -> None:
    """Partition keys work on Milvus Lite too: a routed search scans the nearest label only."""
    settings = MilvusSettings(partition_by="label", num_partitions=4)
    store = MilvusVectorStore.open(client, "routed", SPEC, DIM, settings)
    records = numbered(40)
    store.insert(records)
    from lookalike.core.milvus.vector_index import SearchParams

    query = np.stack([records[4].embedding])
    hits = store.search(query, top_k=40, params=SearchParams(mode="routed", route_top_n=1))[0]
    assert hits[0].image.id == records[4].meta.id
    assert {h.image.label for h in hits} == {"even"}
    both = store.search(query, top_k=40, params=SearchParams(mode="routed", route_top_n=2))[0]
    assert len(both) == 40


def test_lite_routed_search_over_predicted_partitions(client: Any) -> None:
    """partition_by=predicted keys each row by its record's predicted category, not its label;
    routes and copies (iter_records) keep it, and a record without one stores nothing."""
    settings = MilvusSettings(partition_by="predicted", num_partitions=4)
    store = MilvusVectorStore.open(client, "predicted", SPEC, DIM, settings)
    assert store.layout().partition_by == "predicted"
    plain = numbered(40)
    # Predicted classes cut across the labels (even/odd), so routing by label would differ.
    records = [replace(r, category="tabby" if r.meta.id % 3 else "jack-o'-lantern")
               for r in plain]
    missing = replace(numbered(41)[40], category="")
    with pytest.raises(ConfigError, match=r"/src/40\.jpg has no predicted category"):
        store.insert([*records[:2], missing])
    assert store.count() == 0
    store.insert(records)
    from lookalike.core.milvus.vector_index import SearchParams

    query = np.stack([records[4].embedding])  # id 5: "tabby"
    hits = store.search(query, top_k=40, params=SearchParams(mode="routed", route_top_n=1))[0]
    assert hits[0].image.id == 5
    assert {h.image.id for h in hits} == {r.meta.id for r in records if r.category == "tabby"}
    quoted = store.search(np.stack([records[2].embedding]), top_k=40,
                          params=SearchParams(mode="routed", route_top_n=1))[0]
    assert {h.image.id % 3 for h in quoted} == {0}
    copied = {r.meta.id: r.category for batch in store.iter_records() for r in batch}
    assert copied == {r.meta.id: r.category for r in records}


def test_best_of_ranks_candidates_by_exact_score() -> None:
    query = np.array([1.0, 0.0], dtype=np.float32)
    vectors = np.array([[0.5, 0.5], [0.9, 0.1], [0.5, -0.5], [-1.0, 0.0]], dtype=np.float32)
    ids = [10, 11, 12, 13]
    best = best_of(query, ids, vectors, 3, None)
    # Ties (10 and 12 both score 0.5) keep the candidates' order.
    assert [(h.id, h.score) for h in best] == [(11, pytest.approx(0.9)), (10, 0.5), (12, 0.5)]
    assert [h.id for h in best_of(query, ids, vectors, 10, 0.5)] == [11]
    assert best_of(query, [], np.empty((0, 2), dtype=np.float32), 3, None) == []


def test_first_of_each_drops_repeated_ids_with_their_rows() -> None:
    vectors = np.arange(10, dtype=np.float32).reshape(5, 2)
    ids, rows = first_of_each([4, 2, 4, 9, 2], vectors)
    assert ids == [4, 2, 9]
    np.testing.assert_array_equal(rows, vectors[[0, 1, 3]])
    same_ids, same_rows = first_of_each([1, 2], vectors[:2])
    assert same_ids == [1, 2]
    np.testing.assert_array_equal(same_rows, vectors[:2])


def test_rescored_search_takes_its_candidates_vectors_from_the_search(client: Any) -> None:
    """With a re-rank depth (here on HNSW), the candidates come back from the search with their
    vectors and are re-scored exactly; a batch answers each query as it would alone, and the
    filter, exclusions and min_score still hold."""
    store = MilvusVectorStore.open(client, "images", SPEC, DIM, MilvusSettings())
    records = numbered(60)
    store.insert(records)
    x = np.stack([r.embedding for r in records])
    queries = x[[3, 10, 25]] + 0.05
    deep = SearchParams(rerank_factor=3)
    batch = store.search_ids(queries, top_k=5, params=deep)
    for query, hits in zip(queries, batch, strict=True):
        exact = x @ query
        assert [h.id for h in hits] == [int(i) + 1 for i in np.argsort(-exact)[:5]]
        assert [h.score for h in hits] == pytest.approx([float(exact[h.id - 1]) for h in hits],
                                                        abs=1e-5)
        assert [h.id for h in store.search_ids(query[None], top_k=5, params=deep)[0]] == [
            h.id for h in hits]
    kept = store.search_ids(queries, top_k=5, params=deep, filter_expr='label == "odd"',
                            exclude_ids=[h.id for h in batch[0][:2]], min_score=0.0)
    for hits in kept:
        assert all(h.id % 2 == 0 and h.score > 0.0 for h in hits)  # odd rows have even ids
    assert not {h.id for h in batch[0][:2]} & {h.id for h in kept[0]}


def test_search_raw_is_exact_and_returns_vectors(client: Any) -> None:
    """search_raw ranks by inner product on raw, with the stored raw vectors."""
    store = MilvusVectorStore.open(client, "augmented", DBA_SPEC, DIM, MilvusSettings(), dba=DBA)
    stored = distinct(30)
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
