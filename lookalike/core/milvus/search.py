"""Every search mode of a served collection.

- ann: the float index; where the re-rank factor asks for deeper candidates, they come back
  with their vectors and are re-scored exactly.
- hash_rerank: Hamming search over the binary codes, then exact float re-scoring, with the
  vectors from the codes collection where it keeps them (one round trip) or fetched by id.
- routed: the query's nearest categories first, then only their partitions.
- raw: exact search over the raw descriptors of a DBA collection, with their vectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from lookalike.core.errors import ConfigError, InvalidArgument
from lookalike.core.milvus import companions
from lookalike.core.milvus.companions import CodeEncoder
from lookalike.core.milvus.connection import Served
from lookalike.core.milvus.errors import call_failed, companion_failed, milvus_errors
from lookalike.core.milvus.hit_vectors import ids_and_vectors
from lookalike.core.milvus.inspection import LayoutCache
from lookalike.core.milvus.layout import MAX_TOP_K, RAW_FIELD, HashInfo, Layout, require_encoder
from lookalike.core.milvus.reads import get_metas
from lookalike.core.milvus.rows import META_FIELDS, meta_from_entity
from lookalike.core.milvus.vector_index import (
    ResolvedSearch,
    SearchParams,
    check_min_score,
    float_search_params,
    resolve,
)
from lookalike.core.schemas import ImageMeta, ScoredId, SearchHit


@dataclass(frozen=True, slots=True)
class RawNeighbours:
    """One query's nearest raw descriptors, best first: ids (K), similarities (K), vectors (K x D)."""

    ids: NDArray[np.int64]
    scores: NDArray[np.float32]
    vectors: NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Ranking:
    """One batch of queries as a search mode sees it."""

    queries: NDArray[np.float32]
    top_k: int
    # Candidates asked of the index: top_k x the re-rank factor, at most MAX_TOP_K.
    limit: int
    filter_expr: str
    # The filter (in parentheses) and the exclusions as Milvus clauses, joined by "and".
    clauses: tuple[str, ...]
    min_score: float | None
    search: ResolvedSearch


def best_of(
    query: NDArray[np.float32], ids: Sequence[int], vectors: NDArray[np.float32], top_k: int,
    min_score: float | None,
) -> list[ScoredId]:
    """The `top_k` of `ids` by inner product of their `vectors` (len(ids) x D) with `query`,
    best first (ties keep the candidates' order), those above `min_score` only."""
    if not len(ids):
        return []
    scores = vectors @ query
    order = np.argsort(-scores, kind="stable")[:top_k]
    return [ScoredId(id=int(ids[j]), score=float(scores[j])) for j in order
            if min_score is None or scores[j] > min_score]


def first_of_each(ids: Sequence[int], vectors: NDArray[np.float32]) -> tuple[
        list[int], NDArray[np.float32]]:
    """`ids` and their rows of `vectors` without repeats (the first of each kept, in order):
    a search over several segments can return an id twice."""
    seen: dict[int, int] = {}
    for row, i in enumerate(ids):
        seen.setdefault(int(i), row)
    if len(seen) == len(ids):
        return list(ids), vectors
    return list(seen), vectors[list(seen.values())]


def check_queries(vectors: NDArray[np.float32], top_k: int) -> None:
    """Raise InvalidArgument unless `vectors` is a non-empty N x D batch and `top_k` in range."""
    if not 1 <= top_k <= MAX_TOP_K:
        raise InvalidArgument(f"top_k must be between 1 and {MAX_TOP_K}, got {top_k}")
    if vectors.ndim != 2 or len(vectors) == 0:
        raise InvalidArgument(f"expected an N x D array of query vectors, got {vectors.shape}")


def search_hits(
    served: Served, layouts: LayoutCache, encoder: CodeEncoder | None, vectors: NDArray[np.float32],
    top_k: int, filter_expr: str, exclude_ids: Sequence[int], min_score: float | None,
    params: SearchParams | None,
) -> list[list[SearchHit]]:
    """Nearest stored images per query vector, with their metadata."""
    metas: dict[int, ImageMeta] = {}
    ranked = search_ids(served, layouts, encoder, vectors, top_k, filter_expr, exclude_ids,
                        min_score, params, metas)
    wanted = sorted({s.id for per_query in ranked for s in per_query} - set(metas))
    metas.update((m.id, m) for m in get_metas(served, wanted) if m is not None)
    # A hit deleted between the search and the metadata read just drops out.
    return [
        [SearchHit(image=metas[s.id], score=s.score) for s in per_query if s.id in metas]
        for per_query in ranked
    ]


def search_ids(
    served: Served, layouts: LayoutCache, encoder: CodeEncoder | None, vectors: NDArray[np.float32],
    top_k: int, filter_expr: str, exclude_ids: Sequence[int], min_score: float | None,
    params: SearchParams | None, metas: dict[int, ImageMeta] | None = None,
) -> list[list[ScoredId]]:
    """Ranked ids and scores per query, in the mode `params` (or the settings) ask for; where
    the float index answers directly, the hits' metadata comes with them into `metas` (when
    given), sparing a second read."""
    check_min_score(min_score)
    check_queries(vectors, top_k)
    layout = layouts.get()
    search = resolve(served.settings, params, layout.index_type)
    clauses = [f"({filter_expr})"] if filter_expr.strip() else []
    if exclude_ids:
        clauses.append(f"id not in {[int(i) for i in exclude_ids]}")
    ranking = Ranking(
        queries=np.asarray(vectors, dtype=np.float32), top_k=top_k,
        limit=min(top_k * search.rerank_factor, MAX_TOP_K), filter_expr=filter_expr,
        clauses=tuple(clauses), min_score=min_score, search=search,
    )
    match search.mode:
        case "hash_rerank":
            if layout.hash is None:
                raise ConfigError(
                    f"collection {served.name!r} keeps no hash codes: run `lookalike hash` "
                    "first (server only), or search in another mode"
                )
            return _hash_reranked(served, layout.physical, layout.hash,
                                  require_encoder(served.name, encoder, layout.hash), ranking,
                                  exclude_ids)
        case "routed":
            if not layout.partitioned:
                raise ConfigError(
                    f"collection {served.name!r} has no category partitions: create it with "
                    "LOOKALIKE_MILVUS__PARTITION_BY=label (or predicted) for routed search"
                )
            return _routed(served, layout, ranking, metas)
    return _float_search(served, layout, ranking, metas)


def _hash_reranked(
    served: Served, physical: str, info: HashInfo, encoder: CodeEncoder, ranking: Ranking,
    exclude_ids: Sequence[int],
) -> list[list[ScoredId]]:
    """The nearest codes in Hamming distance, re-scored exactly with their float vectors."""
    queries, settings = ranking.queries, served.settings
    codes = encoder.encode(queries)
    if info.floats and not ranking.filter_expr.strip():
        # The candidates come with their vectors: one round trip to Milvus.
        with milvus_errors(companion_failed("search codes with floats", served.name)):
            found = companions.search_codes_with_floats(
                served.client, physical, codes, ranking.limit, ranking.search.hash_nprobe,
                settings.consistency, queries.shape[1], exclude_ids,
            )
        return [best_of(query, ids, vectors, ranking.top_k, ranking.min_score)
                for query, (ids, vectors) in zip(queries, found, strict=True)]
    with milvus_errors(companion_failed("search codes", served.name)):
        candidates = companions.search_codes(
            served.client, physical, codes, ranking.limit, ranking.search.hash_nprobe,
            settings.consistency,
        )
    return _rescored(served, ranking, candidates)


def _routed(
    served: Served, layout: Layout, ranking: Ranking, metas: dict[int, ImageMeta] | None
) -> list[list[ScoredId]]:
    """Each query searched in its nearest categories' partitions only."""
    with milvus_errors(companion_failed("nearest categories", served.name)):
        routes = companions.nearest_categories(
            served.client, layout.physical, ranking.queries, ranking.search.route_top_n,
            served.settings.consistency,
        )
    # Queries routed to the same categories share one search (one filter each).
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, nearest in enumerate(routes):
        groups.setdefault(tuple(sorted(nearest)), []).append(i)
    ranked: list[list[ScoredId]] = [[] for _ in range(len(ranking.queries))]
    for route, members in groups.items():
        clauses = (*ranking.clauses, companions.category_filter(route)) if route else ranking.clauses
        group = replace(ranking, queries=ranking.queries[members], clauses=clauses)
        for i, answer in zip(members, _float_search(served, layout, group, metas), strict=True):
            ranked[i] = answer
    return ranked


def _float_search(
    served: Served, layout: Layout, ranking: Ranking, metas: dict[int, ImageMeta] | None
) -> list[list[ScoredId]]:
    """The float index's top `limit`, re-scored exactly down to `top_k` when limit > top_k."""
    direct = ranking.limit == ranking.top_k
    # Re-scored candidates come with their vectors: one round trip, not a search and a get.
    fields = (["id", "embedding"] if not direct
              else list(META_FIELDS) if metas is not None else ["id"])
    with milvus_errors(f"search in {served.name!r} failed", filter_expr=ranking.filter_expr):
        results = served.client.search(
            served.name, data=ranking.queries.tolist(), limit=ranking.limit,
            filter=" and ".join(ranking.clauses), output_fields=fields, anns_field="embedding",
            consistency_level=served.settings.consistency,
            search_params=float_search_params(layout.index_type, ranking.search, ranking.limit,
                                              ranking.min_score),
        )
    if direct:
        if metas is not None:
            metas.update((int(h["id"]), meta_from_entity(h["entity"] | {"id": h["id"]}))
                         for per_query in results for h in per_query)
        return [[ScoredId(id=int(h["id"]), score=float(h["distance"])) for h in per_query]
                for per_query in results]
    found = ids_and_vectors(results, "embedding", ranking.queries.shape[1])
    return [best_of(query, *first_of_each(ids, vectors), ranking.top_k, ranking.min_score)
            for query, (ids, vectors) in zip(ranking.queries, found, strict=True)]


def _rescored(
    served: Served, ranking: Ranking, candidates: list[list[int]]
) -> list[list[ScoredId]]:
    """Each query's candidates scored exactly with their stored vectors, best `top_k`; the
    ranking's clauses (filter, exclusions) are applied to the candidates here."""
    vectors = _vectors_where(served, sorted({i for c in candidates for i in c}), ranking)
    out: list[list[ScoredId]] = []
    for query, ids in zip(ranking.queries, candidates, strict=True):
        kept = [i for i in dict.fromkeys(ids) if i in vectors]
        out.append(best_of(query, kept, np.stack([vectors[i] for i in kept]) if kept
                           else np.empty((0, len(query)), dtype=np.float32),
                           ranking.top_k, ranking.min_score))
    return out


def _vectors_where(
    served: Served, ids: list[int], ranking: Ranking
) -> dict[int, NDArray[np.float32]]:
    """Stored embeddings of those of `ids` that match the ranking's clauses, by id."""
    found: dict[int, NDArray[np.float32]] = {}
    consistency = served.settings.consistency
    for start in range(0, len(ids), MAX_TOP_K):
        chunk = ids[start:start + MAX_TOP_K]
        with milvus_errors(f"query in {served.name!r} failed", filter_expr=ranking.filter_expr):
            # By primary key where nothing else narrows them: no scan of the other rows.
            # strict_float32: the vectors come as views of one float32 array, not as lists
            # of Python floats, which cost most of a re-ranked search's time.
            rows = (served.client.get(served.name, ids=chunk, output_fields=["id", "embedding"],
                                      consistency_level=consistency, strict_float32=True)
                    if not ranking.clauses else
                    served.client.query(
                        served.name, filter=" and ".join([f"id in {chunk}", *ranking.clauses]),
                        output_fields=["id", "embedding"], limit=len(chunk),
                        consistency_level=consistency, strict_float32=True))
        found.update((int(r["id"]), np.asarray(r["embedding"], dtype=np.float32))
                     for r in rows)
    return found


def search_raw(served: Served, vectors: NDArray[np.float32], top_k: int) -> list[RawNeighbours]:
    """Exact nearest raw descriptors per query vector, with their vectors; one per query (the
    collection must keep raw descriptors)."""
    with milvus_errors(call_failed("search", served.name)):
        results = served.client.search(
            served.name, data=np.asarray(vectors, dtype=np.float32).tolist(),
            limit=top_k, output_fields=[RAW_FIELD], search_params={"params": {}},
            anns_field=RAW_FIELD,
        )
    dim = vectors.shape[1]
    return [
        RawNeighbours(
            ids=np.array([int(hit["id"]) for hit in per_query], dtype=np.int64),
            scores=np.array([float(hit["distance"]) for hit in per_query], dtype=np.float32),
            vectors=np.array(
                [hit["entity"][RAW_FIELD] for hit in per_query], dtype=np.float32
            ).reshape(len(per_query), dim),
        )
        for per_query in results
    ]
