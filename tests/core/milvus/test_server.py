"""The vector store against a real Milvus standalone server: every index type, hash codes with
Hamming then float re-ranking, class-routed partitions, range search and filters."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from lookalike.core.errors import ConfigError, InvalidArgument
from lookalike.core.milvus.companions import decode_floats
from lookalike.core.milvus.vector_index import SearchParams
from lookalike.core.schemas import ImageMeta, ImageRecord
from lookalike.core.settings import MilvusSettings
from lookalike.core.vector_store import MilvusVectorStore
from lookalike.embedder.hashing import learn_itq
from tests.conftest import MilvusServer

pytestmark = pytest.mark.milvus_server

DIM = 64
CLASSES = 12
PER_CLASS = 250  # 3,000 rows: enough for the server to seal segments and build real indexes
SPEC = {"backbone": "synthetic", "dim": DIM}


def clustered(seed: int = 0) -> tuple[NDArray[np.float32], list[str]]:
    """Unit vectors in CLASSES clusters, and each one's class label."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CLASSES, DIM))
    x = np.repeat(centres, PER_CLASS, axis=0) + 0.6 * rng.standard_normal((CLASSES * PER_CLASS, DIM))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), [f"class{i // PER_CLASS:02d}" for i in range(len(x))]


def records(x: NDArray[np.float32], labels: list[str], first_id: int = 1) -> list[ImageRecord]:
    return [
        ImageRecord(
            meta=ImageMeta(id=first_id + i, sha256=f"{first_id + i:064x}", blob_key=f"k{i}",
                           source=f"s3://bucket/{labels[i]}/{i}.jpg", label=labels[i],
                           tags=("even",) if i % 2 == 0 else ("odd",), meta={"i": i},
                           width=10, height=10, ingested_at=1_700_000_000 + i),
            embedding=x[i],
            # What the embedder would predict; only a collection partitioned by it reads it.
            category=f"predicted-{labels[i]}",
        )
        for i in range(len(x))
    ]


def near_copies(x: NDArray[np.float32], picks: NDArray[np.int64], seed: int = 1) -> NDArray[np.float32]:
    """Slightly perturbed copies of the rows `picks`, renormalised."""
    noisy = x[picks] + 0.02 * np.random.default_rng(seed).standard_normal((len(picks), DIM))
    return np.asarray(noisy / np.linalg.norm(noisy, axis=1, keepdims=True), dtype=np.float32)


def build(client: Any, server: MilvusServer, name: str, **overrides: Any) -> tuple[
        MilvusVectorStore, NDArray[np.float32], list[str]]:
    settings = server.settings(ivf_nlist=32, ivf_nprobe=8, **overrides)
    store = MilvusVectorStore.open(client, name, SPEC, DIM, settings)
    x, labels = clustered()
    recs = records(x, labels)
    for start in range(0, len(recs), 1000):
        store.insert(recs[start:start + 1000])
    store.seal()
    reload(client, store)
    return store, x, labels


def reload(client: Any, store: MilvusVectorStore) -> None:
    """Release and load, so that the query node serves the built indexes rather than the raw
    rows it held while they were being built."""
    physical = store.layout(refresh=True).physical
    client.release_collection(physical)
    client.load_collection(physical)


PICKS = np.arange(7, CLASSES * PER_CLASS, 97)


@pytest.mark.parametrize("index_type", ["FLAT", "HNSW", "IVF_FLAT", "IVF_SQ8", "IVF_PQ"])
def test_each_index_type_builds_and_finds_near_copies(
    server_client: Any, milvus_server: MilvusServer, index_type: str
) -> None:
    store, x, _ = build(server_client, milvus_server, f"idx_{index_type.lower()}",
                        index_type=index_type, pq_m=8)
    info = store.describe()
    assert (info.index_type, info.count) == (index_type, len(x))
    index = server_client.describe_index(info.physical_name, "embedding")
    assert int(index["indexed_rows"]) == len(x)  # built by the server, not scanned exactly
    hits = store.search_ids(near_copies(x, PICKS), top_k=5)
    assert [h[0].id for h in hits] == [int(i) + 1 for i in PICKS]
    # A per-query parameter reaches the index: nprobe=1 still answers (with its recall).
    if index_type.startswith("IVF"):
        assert len(store.search_ids(x[:2], top_k=3, params=SearchParams(nprobe=1))[0]) == 3


def test_ivf_pq_scores_are_exact_after_float_rerank(
    server_client: Any, milvus_server: MilvusServer
) -> None:
    store, x, _ = build(server_client, milvus_server, "pq_rerank", index_type="IVF_PQ", pq_m=8)
    query = near_copies(x, np.array([42]))
    exact = x @ query[0]
    reranked = store.search_ids(query, top_k=10)[0]  # IVF_PQ re-ranks 4 x top_k by default
    assert [h.score for h in reranked] == pytest.approx([float(exact[h.id - 1]) for h in reranked],
                                                        abs=1e-5)
    raw = store.search_ids(query, top_k=10, params=SearchParams(rerank_factor=1))[0]
    assert [h.score for h in raw] != pytest.approx([float(exact[h.id - 1]) for h in raw], abs=1e-5)
    # A batch: every query's candidates come back with their vectors in one search, and each
    # query is re-scored with its own (as it would be alone); filter and exclusions hold.
    queries = near_copies(x, PICKS[:4])
    batch = store.search_ids(queries, top_k=10)
    for q, hits in zip(queries, batch, strict=True):
        assert [h.score for h in hits] == pytest.approx([float(x[h.id - 1] @ q) for h in hits],
                                                        abs=1e-5)
        assert [h.id for h in hits] == [h.id for h in store.search_ids(q[None], top_k=10)[0]]
    assert [hits[0].id for hits in batch] == [int(i) + 1 for i in PICKS[:4]]
    kept = store.search_ids(queries, top_k=10, filter_expr='ARRAY_CONTAINS(tags, "odd")',
                            exclude_ids=[hits[0].id for hits in batch])
    for hits, alone in zip(kept, batch, strict=True):
        assert hits
        assert all(h.id % 2 == 0 and h.id != alone[0].id for h in hits)  # odd rows: even ids


@pytest.mark.parametrize("floats", [True, False], ids=["floats-in-codes", "floats-fetched"])
def test_hash_rerank_returns_the_exact_top1_of_near_copies(
    server_client: Any, milvus_server: MilvusServer, floats: bool
) -> None:
    """Both ways to the candidates' floats: from the codes collection (one round trip) and
    fetched by id from the collection (codes made without them)."""
    store, x, _ = build(server_client, milvus_server, f"hashed_{floats}", index_type="HNSW",
                        hash_nlist=16, hash_nprobe=16, hash_floats=floats)
    with pytest.raises(ConfigError, match="lookalike hash"):
        store.search_ids(x[:1], top_k=1, params=SearchParams(mode="hash_rerank"))
    itq = learn_itq(x, 64, seed=0)
    assert store.build_codes(itq) == len(x)
    store.seal()
    info = store.hash_info()
    assert info is not None
    assert info.floats is floats
    codes = store.layout().physical + "__codes"
    server_client.release_collection(codes)
    server_client.load_collection(codes)
    fields = {f["name"] for f in server_client.describe_collection(codes)["fields"]}
    assert ("floats" in fields) is floats
    queries = near_copies(x, PICKS)
    exact = np.argsort(-(queries @ x.T), axis=1)[:, 0] + 1
    hits = store.search_ids(queries, top_k=10, params=SearchParams(mode="hash_rerank"))
    assert [h[0].id for h in hits] == exact.tolist()
    # Scores are the exact float similarities of the re-ranked candidates, best first.
    for query, per_query in zip(queries, hits, strict=True):
        assert [h.score for h in per_query] == sorted((h.score for h in per_query), reverse=True)
        assert [h.score for h in per_query] == pytest.approx(
            [float(query @ x[h.id - 1]) for h in per_query], abs=1e-6)
    # Exclusions and filters hold on either path (a filter reads the collection's fields).
    top = hits[0][0].id
    excluded = store.search_ids(queries[:1], top_k=5, exclude_ids=[top],
                                params=SearchParams(mode="hash_rerank"))[0]
    assert top not in [h.id for h in excluded]
    assert len(excluded) == 5
    # Filters apply to the candidates: a class01 query keeps its class01 images tagged "even".
    in_class01 = int(np.flatnonzero((PICKS >= PER_CLASS) & (PICKS < 2 * PER_CLASS))[0])
    tagged = store.search_ids(queries[in_class01:in_class01 + 1], top_k=5,
                              filter_expr='label == "class01" and ARRAY_CONTAINS(tags, "even")',
                              params=SearchParams(mode="hash_rerank"))[0]
    assert len(tagged) == 5
    assert all(PER_CLASS < h.id <= 2 * PER_CLASS and (h.id - 1) % 2 == 0 for h in tagged)
    bounded = store.search_ids(queries[:1], top_k=10, min_score=0.9,
                               params=SearchParams(mode="hash_rerank"))[0]
    assert bounded
    assert all(h.score > 0.9 for h in bounded)


def test_codes_follow_inserts_and_deletes(server_client: Any, milvus_server: MilvusServer) -> None:
    # Strong: a search must see this process's delete at once (Session does not on 2.3).
    store, x, _labels = build(server_client, milvus_server, "hash_writes", consistency="Strong")
    store.build_codes(learn_itq(x, 64, seed=0))
    extra = near_copies(x, np.array([5]), seed=9)
    store.insert(records(extra, ["class00"], first_id=10_000))
    hash_mode = SearchParams(mode="hash_rerank")
    assert store.search_ids(extra, top_k=1, params=hash_mode)[0][0].id == 10_000
    codes = store.layout().physical + "__codes"
    # The float copy follows a changed embedding (as DBA writes them).
    moved = near_copies(x, np.array([300]), seed=4)
    assert store.upsert_embeddings([10_000], moved) == 1
    assert store.search_ids(moved, top_k=1, params=hash_mode)[0][0].id == 10_000
    (row,) = server_client.get(codes, ids=[10_000], output_fields=["floats"])
    assert np.array_equal(decode_floats(row["floats"]), moved[0])
    store.delete([10_000])
    assert store.search_ids(extra, top_k=1, params=hash_mode)[0][0].id != 10_000
    assert store.search_ids(moved, top_k=1, params=hash_mode)[0][0].id != 10_000
    assert not server_client.get(codes, ids=[10_000])


def test_routed_search_scans_only_the_nearest_categories(
    server_client: Any, milvus_server: MilvusServer
) -> None:
    store, x, labels = build(server_client, milvus_server, "routed", partition_by="label",
                             num_partitions=16)
    queries = near_copies(x, PICKS)
    routed = store.search_ids(queries, top_k=5, params=SearchParams(mode="routed", route_top_n=1))
    assert [h[0].id for h in routed] == [int(i) + 1 for i in PICKS]
    # One category only: every hit has the query's label.
    hits = store.search(queries[:3], top_k=20, params=SearchParams(mode="routed", route_top_n=1))
    for pick, per_query in zip(PICKS[:3], hits, strict=True):
        assert {h.image.label for h in per_query} == {labels[int(pick)]}
    # The category means follow deletes: a category emptied of images is no longer routed to.
    doomed = [i + 1 for i, label in enumerate(labels) if label == "class03"]
    assert store.delete(doomed) == PER_CLASS
    rows = server_client.query(store.layout().physical + "__routes", filter="",
                               output_fields=["category", "count"], limit=100)
    assert {r["category"]: r["count"] for r in rows} == {
        f"class{c:02d}": PER_CLASS for c in range(CLASSES) if c != 3
    }


def test_routed_search_over_predicted_categories(
    server_client: Any, milvus_server: MilvusServer
) -> None:
    """partition_by=predicted keys rows by the embedder's predicted class: routed search
    returns the exact top-1 of near-copies and scans only the predicted partitions."""
    store, x, _ = build(server_client, milvus_server, "predicted", partition_by="predicted",
                             num_partitions=16)
    assert store.layout().partition_by == "predicted"
    queries = near_copies(x, PICKS)
    exact = store.search_ids(queries, top_k=1, params=SearchParams(mode="ann"))
    routed = store.search_ids(queries, top_k=5, params=SearchParams(mode="routed", route_top_n=1))
    assert [h[0].id for h in routed] == [h[0].id for h in exact] == [int(i) + 1 for i in PICKS]
    rows = server_client.query(store.layout().physical + "__routes", filter="",
                               output_fields=["category", "count"], limit=100)
    assert {r["category"]: r["count"] for r in rows} == {
        f"predicted-class{c:02d}": PER_CLASS for c in range(CLASSES)
    }
    stored = server_client.query(store.layout().physical, filter="id in [8, 2500]",
                                 output_fields=["category", "label"])
    assert sorted((r["category"], r["label"]) for r in stored) == [
        ("predicted-class00", "class00"), ("predicted-class09", "class09")]


def test_routed_needs_partitions_and_hash_needs_a_server(
    server_client: Any, milvus_server: MilvusServer, client: Any
) -> None:
    store = MilvusVectorStore.open(server_client, "plain", SPEC, DIM, milvus_server.settings())
    with pytest.raises(ConfigError, match="PARTITION_BY"):
        store.search_ids(np.ones((1, DIM), np.float32), 1, params=SearchParams(mode="routed"))
    lite = MilvusVectorStore.open(client, "lite", SPEC, DIM, MilvusSettings())
    with pytest.raises(ConfigError, match="Milvus Lite cannot build binary"):
        lite.build_codes(learn_itq(clustered()[0], 64))
    with pytest.raises(InvalidArgument, match="unknown search mode"):
        SearchParams(mode="fast")  # type: ignore[arg-type]


def test_range_search_and_filters_on_the_server(
    server_client: Any, milvus_server: MilvusServer
) -> None:
    store, x, _labels = build(server_client, milvus_server, "filters", index_type="HNSW")
    query = x[:1]
    exact = x @ query[0]
    bounded = store.search_ids(query, top_k=1000, min_score=0.5)[0]
    assert bounded
    assert all(h.score > 0.5 for h in bounded)
    assert len(bounded) == int((exact > 0.5).sum())
    filtered = store.search(
        query, top_k=50,
        filter_expr='label == "class00" and ARRAY_CONTAINS(tags, "even") '
                    'and ingested_at >= 1700000010 and source like "s3://bucket/class00/%"',
    )[0]
    assert filtered
    for hit in filtered:
        assert hit.image.label == "class00"
        assert "even" in hit.image.tags
        assert hit.image.ingested_at >= 1_700_000_010


def scattered_records(n: int, seed: int = 5) -> list[ImageRecord]:
    """`n` records with random 62-bit ids (as content ids are) in 12 classes."""
    x, labels = clustered(seed)
    ids = np.random.default_rng(seed).choice(2**62, size=len(x), replace=False)[:n]
    return [
        ImageRecord(meta=ImageMeta(id=int(ids[i]), sha256=f"{i:064x}", blob_key=f"k{i}",
                                   source=f"s{i}", label=labels[i], tags=(), meta={},
                                   width=1, height=1, ingested_at=i),
                    embedding=x[i])
        for i in range(n)
    ]


def test_pages_counts_and_label_counts_on_the_server(
    server_client: Any, milvus_server: MilvusServer
) -> None:
    """Over several sealed segments: pages run through the ids in order, each once; count and
    label counts match what was stored, with and without a filter."""
    store = MilvusVectorStore.open(server_client, "paging", SPEC, DIM,
                                   milvus_server.settings(index_type="FLAT"))
    recs = scattered_records(2400)
    for start in range(0, len(recs), 800):
        store.insert(recs[start:start + 800])
        server_client.flush(store.live_collection())
    for filter_expr, wanted in (("", recs),
                                ('label in ["class01", "class02"]',
                                 [r for r in recs if r.meta.label in ("class01", "class02")])):
        seen = [m.id for offset in range(0, 2500, 500)
                for m in store.page(filter_expr, offset, 500)]
        assert seen == sorted(r.meta.id for r in wanted)
        assert store.count_matching(filter_expr) == len(wanted)
    assert store.label_counts() == dict(Counter(r.meta.label for r in recs))
    assert store.label_counts("ingested_at < 300") == {"class00": 250, "class01": 50}


def test_rebuild_index_on_the_server(server_client: Any, milvus_server: MilvusServer) -> None:
    """HNSW -> HNSW with other parameters -> FLAT -> IVF_PQ: describe_index reports each one
    with its parameters, and near copies still find their original first after each.

    IVF_PQ comes last: on this embedded server (storageType local) reading vectors through an
    IVF_PQ segment and then releasing it deletes the segment's vector binlog, after which no
    index can be built on it again; a Milvus on MinIO/S3 keeps its cache elsewhere.
    """
    store, x, _labels = build(server_client, milvus_server, "rebuild", index_type="HNSW")
    queries = near_copies(x, PICKS)
    for index_type, params, reported in (
        ("HNSW", {"M": "8", "efConstruction": "64"}, {"M": "8", "efConstruction": "64"}),
        ("FLAT", {}, {}),
        ("IVF_PQ", {"nlist": "16", "m": "16"}, {"nlist": "16", "m": "16", "nbits": "8"}),
    ):
        layout = store.rebuild_index(index_type, params)
        assert layout.index_type == index_type
        assert {k: str(v) for k, v in layout.index_params.items()} == reported
        hits = store.search_ids(queries, top_k=1)
        assert [h[0].id for h in hits] == [int(p) + 1 for p in PICKS]
    with pytest.raises(InvalidArgument, match="divide"):
        store.rebuild_index("IVF_PQ", {"m": "7"})
    assert store.layout(refresh=True).index_type == "IVF_PQ"
