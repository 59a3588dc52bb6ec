"""The Milvus vector store against real Milvus Lite."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from lookalike.core import vector_store
from lookalike.core.errors import ConfigError, InvalidArgument, InvalidFilter, ModelSpecMismatch
from lookalike.core.schemas import ImageMeta, ImageRecord
from lookalike.core.settings import MilvusSettings
from lookalike.core.vector_index import SearchParams, rebuild_params
from lookalike.core.vector_store import MilvusVectorStore

SPEC = {"backbone": "test", "dim": 8}
DIM = 8


def _records(n: int, seed: int = 0) -> list[ImageRecord]:
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


def test_insert_search_get_round_trip(client: Any) -> None:
    """A stored vector finds itself first with score ~1, with its metadata intact."""
    store = MilvusVectorStore.open(client, "images", SPEC, DIM, MilvusSettings())
    records = _records(20)
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


def test_filter_and_exclusion(client: Any) -> None:
    """Filters restrict results; excluded ids never come back; a bad filter is a clear error."""
    store = MilvusVectorStore.open(client, "images", SPEC, DIM, MilvusSettings())
    records = _records(20)
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


def test_spec_is_checked_on_open(client: Any) -> None:
    """Opening a collection with another model's spec is refused, naming the difference."""
    MilvusVectorStore.open(client, "images", SPEC, DIM, MilvusSettings())
    again = MilvusVectorStore.open(client, "images", dict(SPEC), DIM, MilvusSettings())
    assert again.count() == 0
    with pytest.raises(ModelSpecMismatch, match="backbone: 'test' != 'other'"):
        MilvusVectorStore.open(client, "images", {**SPEC, "backbone": "other"}, DIM,
                               MilvusSettings())


def test_collection_names_are_validated(client: Any) -> None:
    """Names Milvus would refuse are rejected before reaching it."""
    for name in ("1abc", "a-b", "a__b", ""):
        with pytest.raises(ConfigError, match="invalid"):
            MilvusVectorStore.open(client, name, SPEC, DIM, MilvusSettings())
    with pytest.raises(ConfigError, match="does not exist"):
        MilvusVectorStore.open(client, "missing", SPEC, DIM, MilvusSettings(), create=False)


def test_flat_index_builds_and_answers(client: Any) -> None:
    """The index type comes from settings."""
    store = MilvusVectorStore.open(client, "flat", SPEC, DIM, MilvusSettings(index_type="FLAT"))
    records = _records(5)
    store.insert(records)
    assert store.search(np.stack([records[2].embedding]), top_k=1)[0][0].image.id == 3


def test_range_search_delete_and_describe(client: Any) -> None:
    """min_score keeps only closer hits; delete removes vectors; describe reports the collection."""
    store = MilvusVectorStore.open(client, "images", SPEC, DIM, MilvusSettings())
    records = _records(20)
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


def test_lite_refuses_ivf_pq_rather_than_building_another_index(client: Any) -> None:
    with pytest.raises(ConfigError, match="Milvus Lite cannot build IVF_PQ"):
        MilvusVectorStore.open(client, "pq", SPEC, DIM, MilvusSettings(index_type="IVF_PQ"))
    assert client.list_collections() == []


def test_pq_m_must_divide_the_dimension(client: Any) -> None:
    settings = MilvusSettings(uri="http://127.0.0.1:1", index_type="IVF_PQ", pq_m=3)
    from lookalike.core.vector_index import index_params

    with pytest.raises(ConfigError, match="8 is not a multiple of 3"):
        index_params(settings, DIM)
    assert index_params(settings.model_copy(update={"pq_m": 0}), 256)[1]["m"] == 64


def test_lite_routed_search_over_label_partitions(client: Any) -> None:
    """Partition keys work on Milvus Lite too: a routed search scans the nearest label only."""
    settings = MilvusSettings(partition_by="label", num_partitions=4)
    store = MilvusVectorStore.open(client, "routed", SPEC, DIM, settings)
    records = _records(40)
    store.insert(records)
    from lookalike.core.vector_index import SearchParams

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
    plain = _records(40)
    # Predicted classes cut across the labels (even/odd), so routing by label would differ.
    records = [replace(r, category="tabby" if r.meta.id % 3 else "jack-o'-lantern")
               for r in plain]
    missing = replace(_records(41)[40], category="")
    with pytest.raises(ConfigError, match=r"/src/40\.jpg has no predicted category"):
        store.insert([*records[:2], missing])
    assert store.count() == 0
    store.insert(records)
    from lookalike.core.vector_index import SearchParams

    query = np.stack([records[4].embedding])  # id 5: "tabby"
    hits = store.search(query, top_k=40, params=SearchParams(mode="routed", route_top_n=1))[0]
    assert hits[0].image.id == 5
    assert {h.image.id for h in hits} == {r.meta.id for r in records if r.category == "tabby"}
    quoted = store.search(np.stack([records[2].embedding]), top_k=40,
                          params=SearchParams(mode="routed", route_top_n=1))[0]
    assert {h.image.id % 3 for h in quoted} == {0}
    copied = {r.meta.id: r.category for batch in store.iter_records() for r in batch}
    assert copied == {r.meta.id: r.category for r in records}


def _scattered(n: int, seed: int = 3) -> list[ImageRecord]:
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


def _store_with(client: Any, records: list[ImageRecord], batches: int = 4,
                **settings: Any) -> MilvusVectorStore:
    store = MilvusVectorStore.open(client, "images", SPEC, DIM, MilvusSettings(**settings))
    step = -(-len(records) // batches)
    for start in range(0, len(records), step):
        store.insert(records[start:start + step])
        client.flush(store.live_collection())
    return store


def test_pages_cover_every_id_once_in_id_order(client: Any) -> None:
    """Milvus Lite returns query rows in no set order; pages still run through the ids in
    order, each exactly once, with and without a filter."""
    records = _scattered(2000)
    store = _store_with(client, records)
    for filter_expr, wanted in (("", records),
                                ('label in ["l1", "l2"]',
                                 [r for r in records if r.meta.label in ("l1", "l2")])):
        seen = [m.id for offset in range(0, 2100, 300)
                for m in store.page(filter_expr, offset, 300)]
        assert seen == sorted(r.meta.id for r in wanted)
        assert store.count_matching(filter_expr) == len(wanted)
    first = store.page("", 0, 3)
    assert first == sorted((r.meta for r in records), key=lambda m: m.id)[:3]


def test_page_limits(client: Any) -> None:
    """offset + limit past MAX_TOP_K, a negative offset or an empty page are refused."""
    store = _store_with(client, _scattered(10), batches=1)
    for offset, limit in ((16000, 1000), (-1, 5), (0, 0)):
        with pytest.raises(InvalidArgument):
            store.page("", offset, limit)
    with pytest.raises(InvalidFilter):
        store.count_matching("no_such_field > 1")


@pytest.mark.parametrize("probed", [64, 3])
def test_label_counts(client: Any, monkeypatch: pytest.MonkeyPatch, probed: int) -> None:
    """Images per label, "" for unlabelled, within a filter: labels probed one by one, or past
    MAX_PROBED_LABELS counted from the remaining rows' label field."""
    monkeypatch.setattr(vector_store, "MAX_PROBED_LABELS", probed)
    records = _scattered(500)
    store = _store_with(client, records)
    assert store.label_counts() == dict(Counter(r.meta.label for r in records))
    assert store.label_counts("ingested_at < 100") == dict(
        Counter(r.meta.label for r in records if r.meta.ingested_at < 100))
    assert store.label_counts('label == "none"') == {}


def test_rebuild_index_switches_and_reports_the_index(client: Any) -> None:
    """FLAT, then HNSW with M=8, then the settings' index: each reported as built, searches
    after each still find a stored vector first."""
    records = _scattered(300)
    store = _store_with(client, records, batches=2)
    query = np.stack([records[5].embedding])
    for index_type, params, wanted in (("FLAT", {}, {}),
                                       ("HNSW", {"M": "8"}, {"M": "8", "efConstruction": "200"}),
                                       ("", {}, {"M": "16", "efConstruction": "200"})):
        layout = store.rebuild_index(index_type, params)
        assert (layout.index_type, layout.index_params) == (index_type or "HNSW", wanted)
        assert store.describe().index_type == layout.index_type
        assert store.search_ids(query, top_k=1)[0][0].id == records[5].meta.id


def test_rebuild_params_are_checked() -> None:
    """Unknown types, parameters a type does not take, bad values and IVF_PQ on Lite are
    refused with what is allowed; given parameters override the settings'."""
    lite, server = MilvusSettings(), MilvusSettings(uri="http://127.0.0.1:19530")
    assert rebuild_params(server, 64, "ivf_pq", {"m": "16"}) == (
        "IVF_PQ", {"nlist": 1024, "m": 16, "nbits": 8})
    assert rebuild_params(lite, 64, "", {"efConstruction": "64"}) == (
        "HNSW", {"M": 16, "efConstruction": 64})
    with pytest.raises(InvalidArgument, match="known: HNSW, FLAT, IVF_FLAT, IVF_SQ8, IVF_PQ"):
        rebuild_params(lite, 64, "DISKANN", {})
    with pytest.raises(InvalidArgument, match="takes: nlist"):
        rebuild_params(lite, 64, "IVF_FLAT", {"M": "8"})
    with pytest.raises(InvalidArgument, match="integer"):
        rebuild_params(lite, 64, "HNSW", {"M": "eight"})
    with pytest.raises(InvalidArgument, match="M: "):
        rebuild_params(lite, 64, "HNSW", {"M": "2"})
    with pytest.raises(InvalidArgument, match="divide"):
        rebuild_params(server, 64, "IVF_PQ", {"m": "7"})
    with pytest.raises(ConfigError, match="Milvus Lite cannot build IVF_PQ"):
        rebuild_params(lite, 64, "IVF_PQ", {})


def test_best_of_ranks_candidates_by_exact_score() -> None:
    query = np.array([1.0, 0.0], dtype=np.float32)
    vectors = np.array([[0.5, 0.5], [0.9, 0.1], [0.5, -0.5], [-1.0, 0.0]], dtype=np.float32)
    ids = [10, 11, 12, 13]
    best = vector_store.best_of(query, ids, vectors, 3, None)
    # Ties (10 and 12 both score 0.5) keep the candidates' order.
    assert [(h.id, h.score) for h in best] == [(11, pytest.approx(0.9)), (10, 0.5), (12, 0.5)]
    assert [h.id for h in vector_store.best_of(query, ids, vectors, 10, 0.5)] == [11]
    assert vector_store.best_of(query, [], np.empty((0, 2), dtype=np.float32), 3, None) == []


def test_first_of_each_drops_repeated_ids_with_their_rows() -> None:
    vectors = np.arange(10, dtype=np.float32).reshape(5, 2)
    ids, rows = vector_store.first_of_each([4, 2, 4, 9, 2], vectors)
    assert ids == [4, 2, 9]
    np.testing.assert_array_equal(rows, vectors[[0, 1, 3]])
    same_ids, same_rows = vector_store.first_of_each([1, 2], vectors[:2])
    assert same_ids == [1, 2]
    np.testing.assert_array_equal(same_rows, vectors[:2])


def test_rescored_search_takes_its_candidates_vectors_from_the_search(client: Any) -> None:
    """With a re-rank depth (here on HNSW), the candidates come back from the search with their
    vectors and are re-scored exactly; a batch answers each query as it would alone, and the
    filter, exclusions and min_score still hold."""
    store = MilvusVectorStore.open(client, "images", SPEC, DIM, MilvusSettings())
    records = _records(60)
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
