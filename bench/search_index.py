"""`lookalike bench search`'s indexes: the benchmark collection through the product's vector
store, its float index rebuilt as each index type, and the search modes measured on each."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench.search_corpus import F32, Corpus
from lookalike.core.milvus.vector_index import SearchParams, index_params
from lookalike.core.schemas import ImageMeta, ImageRecord
from lookalike.core.settings import IndexType, MilvusSettings
from lookalike.core.vector_store import MilvusVectorStore, connect_milvus

COLLECTION = "bench_search"
INDEXES: tuple[IndexType, ...] = ("FLAT", "HNSW", "IVF_FLAT", "IVF_PQ")
PQ_M = 64


def settings_for(uri: str, index_type: IndexType, pq_m: int = PQ_M,
                 hash_floats: bool = True) -> MilvusSettings:
    return MilvusSettings(
        uri=uri, index_type=index_type, hnsw_m=16, hnsw_ef_construction=128, search_ef=64,
        ivf_nlist=1024, ivf_nprobe=16, pq_m=pq_m, pq_nbits=8, partition_by="label",
        num_partitions=64, hash_nlist=1024, hash_nprobe=16, hash_floats=hash_floats,
        route_top_n=3, timeout_s=600,
    )


def records(corpus: Corpus, start: int, stop: int) -> list[ImageRecord]:
    return [
        ImageRecord(
            meta=ImageMeta(id=i + 1, sha256=f"{i + 1:064x}", blob_key=f"images/{i + 1:064x}.jpg",
                           source="bench", label=corpus.categories[i], tags=(), meta={},
                           width=0, height=0, ingested_at=0),
            embedding=corpus.vectors[i],
        )
        for i in range(start, stop)
    ]


def open_store(uri: str, index_type: IndexType, dim: int, create: bool = False,
               pq_m: int = PQ_M, hash_floats: bool = True) -> tuple[Any, MilvusVectorStore]:
    settings = settings_for(uri, index_type, pq_m, hash_floats)
    client = connect_milvus(uri, settings)
    spec = {"bench": "search", "dim": dim}
    return client, MilvusVectorStore.open(client, COLLECTION, spec, dim, settings, create=create)


def rebuild_index(client: Any, store: MilvusVectorStore, index_type: IndexType, dim: int,
                  pq_m: int = PQ_M) -> float:
    """Drop the float index and build `index_type`; seconds it took to build."""
    physical = store.layout(refresh=True).physical
    client.release_collection(physical)
    client.drop_index(physical, "embedding")
    kind, params = index_params(settings_for("http://x", index_type, pq_m), dim)
    indexes = client.prepare_index_params()
    indexes.add_index(field_name="embedding", index_type=kind, metric_type="IP", params=params)
    started = time.perf_counter()
    client.create_index(physical, indexes)
    store.seal(timeout_s=3600)
    return time.perf_counter() - started


def modes_for(index_type: IndexType, efs: list[int], reranks: list[int]) -> list[
        tuple[str, SearchParams]]:
    """The search modes measured on one index: HNSW at each search list size, IVF_PQ alone
    and re-scored in float at each depth, routed search on FLAT and HNSW."""
    modes: list[tuple[str, SearchParams]] = [("ann", SearchParams())]
    if index_type == "HNSW":
        modes = [(f"ann ef={ef}", SearchParams(ef=ef)) for ef in efs]
    if index_type == "IVF_PQ":
        modes = [("ann, no re-rank", SearchParams(rerank_factor=1)),
                 *((f"ann + float re-rank x{r}", SearchParams(rerank_factor=r)) for r in reranks)]
    if index_type in ("FLAT", "HNSW"):
        modes.append(("routed top-3", SearchParams(mode="routed")))
    return modes


def ids_of(hits: list[list[Any]]) -> list[list[int]]:
    return [[h.id - 1 for h in per_query] for per_query in hits]


def searcher(store: MilvusVectorStore, params: SearchParams) -> Callable[[F32], list[list[int]]]:
    """Top-10 row numbers per query through the vector store, with these parameters."""
    def search(q: F32) -> list[list[int]]:
        return ids_of(store.search_ids(q, 10, params=params))
    return search


def time_one(store: MilvusVectorStore, query: F32, top_k: int, params: SearchParams) -> float:
    """Seconds one query for `top_k` results takes."""
    started = time.perf_counter()
    store.search_ids(query[None], top_k, params=params)
    return time.perf_counter() - started


def hash_mode_name(bits: int, floats: bool) -> str:
    """The hash_rerank row's mode: where its candidates' floats come from."""
    return (f"hash_rerank {bits} bits, r=10, "
            + ("floats in codes" if floats else "floats fetched"))
