"""Search as a domain operation: embed the query (or fetch a stored vector), ask the vector store.

Two optional levers refine the answer: alpha-query expansion (search, average the query with its
nearest neighbours, search again) and geometric verification (match the query's local features
with those stored for each top candidate; candidates that share many geometrically consistent
matches move up). Both default to the settings and can be switched per query.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from lookalike.core.blob_store import BlobStore
from lookalike.core.errors import InvalidArgument, LookalikeError, ModelSpecMismatch, NotFound
from lookalike.core.milvus.vector_index import SearchParams
from lookalike.core.rerank import alpha_qe
from lookalike.core.schemas import ScoredId, SearchHit, features_key
from lookalike.core.search_defaults import DEFAULT_TOP_K, MAX_QE_N
from lookalike.core.vector_store import VectorStore
from lookalike.embedder.errors import EmbedderError, ImageError
from lookalike.embedder.local_features import (
    LocalFeatureConfig,
    LocalFeatureError,
    LocalFeatures,
    features_of,
    verified_order,
)
from lookalike.embedder.matching import VerifyPolicy, count_inliers
from lookalike.embedder.runtime import EmbedOutcome
from lookalike.embedder.spec import EmbedderSpec
from lookalike.services.callctx import forward_ms, queue_ms
from lookalike.services.feature_cache import FeatureCache


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


class QueryEmbedder(Protocol):
    """What search needs from an embedder: in process, or a remote EmbedService."""

    @property
    def spec(self) -> EmbedderSpec:
        """The model spec of the descriptors it returns."""
        ...

    def embed_bytes(self, blobs: Sequence[bytes]) -> list[EmbedOutcome]:
        """One outcome per encoded image, in order."""
        ...


class ModelFollower(Protocol):
    """Where the engine finds the model a collection serves after a roll-out moved its alias."""

    def served_for(self, spec: Mapping[str, Any]) -> QueryEmbedder | None:
        """The embedder, as served, of the model with this spec; None when none is staged."""
        ...


@dataclass(frozen=True, slots=True)
class Query:
    """A query image given as bytes, the id of a stored image, or a raw descriptor."""

    image: bytes | None = None
    image_id: int | None = None
    vector: NDArray[np.float32] | None = None

    def __post_init__(self) -> None:
        given = sum(x is not None for x in (self.image, self.image_id, self.vector))
        if given != 1:
            raise InvalidArgument(
                "a query needs exactly one of: image bytes, stored image id, vector"
            )


@dataclass(frozen=True, slots=True)
class SearchOptions:
    """How many results, which ones, and how much of each: checked once where a request comes
    in (`checked`), and trusted below."""

    top_k: int = DEFAULT_TOP_K
    filter_expr: str = ""
    min_score: float | None = None
    ids_only: bool = False
    # None: the engine's default (Reranking).
    qe_n: int | None = None
    verify: bool | None = None
    # None: the store's settings (mode, ef, nprobe, re-rank factor, routing).
    params: SearchParams | None = None

    @classmethod
    def checked(
        cls, *, max_top_k: int, top_k: int = 0, filter_expr: str = "",
        min_score: float | None = None, ids_only: bool = False, qe_n: int | None = None,
        verify: bool | None = None, params: SearchParams | None = None,
    ) -> SearchOptions:
        """The options of one request, `top_k` 0 meaning the default; InvalidArgument naming
        the option that is out of its bounds."""
        top_k = top_k or DEFAULT_TOP_K
        if not 1 <= top_k <= max_top_k:
            raise InvalidArgument(f"top_k must be between 1 and {max_top_k}, got {top_k}")
        if qe_n is not None and not 0 <= qe_n <= MAX_QE_N:
            raise InvalidArgument(f"qe_n must be between 0 and {MAX_QE_N}, got {qe_n}")
        return cls(top_k, filter_expr, min_score, ids_only, qe_n, verify, params)


@dataclass(frozen=True, slots=True)
class Reranking:
    """The engine's defaults for alpha-QE and geometric verification, and how to run them.

    `qe_n` neighbours (0: off) are averaged into the query with weights sim ** `qe_alpha`. The top
    `verify_top_n` candidates (at least top_k) are verified as `policy` says (how many inliers
    make one verified, and when to stop early). Query images are decoded under `max_pixels`;
    candidates' features are loaded by `fetch_workers` threads, since blob store round trips
    dominate.
    """

    qe_n: int = 0
    qe_alpha: float = 3.0
    verify: bool = False
    verify_top_n: int = 100
    policy: VerifyPolicy = field(default_factory=VerifyPolicy)
    local_features: LocalFeatureConfig = field(default_factory=LocalFeatureConfig)
    max_pixels: int = 50_000_000
    fetch_workers: int = 8
    # Stored images' parsed features kept between searches (0: every search reads them again).
    features_cache_bytes: int = 256 * 2**20


@dataclass(frozen=True, slots=True)
class SearchResult:
    """Hits best first, and the time the search took (and the model's share of it)."""

    hits: list[SearchHit]
    took_ms: float
    collection: str
    embed_ms: float = 0.0
    # Time the query waited for the model behind other requests' batches.
    queue_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class RankResult:
    """Ids and scores best first, and the time the ranking took."""

    ranked: list[ScoredId]
    took_ms: float
    collection: str
    embed_ms: float = 0.0
    queue_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class _Prepared:
    """The 1 x D query vector, the ids to leave out, and the model time spent on it."""

    vector: NDArray[np.float32]
    exclude: tuple[int, ...] = ()
    embed_ms: float = 0.0
    queue_ms: float = 0.0


def _count_inliers(
    query: LocalFeatures, candidates: Sequence[LocalFeatures | None], config: LocalFeatureConfig,
    policy: VerifyPolicy,
) -> list[int]:
    """Inliers of each candidate; 0 where one has no usable features, never an error."""
    # Stored with another feature kind (the setting changed since ingest): not comparable.
    comparable = [c if c is not None and c.kind == query.kind else None for c in candidates]
    return count_inliers(query, comparable, config, policy)


@dataclass(frozen=True, slots=True)
class HitBlobs:
    """Thumbnail bytes or URLs for one hit (empty where not asked for or not available)."""

    thumbnail: bytes = b""
    thumbnail_url: str = ""
    image_url: str = ""


class SearchEngine:
    """Embeds queries and searches one collection; shared by the gRPC servicers and the CLI."""

    def __init__(
        self,
        embedder: QueryEmbedder,
        store: VectorStore,
        blobs: BlobStore,
        *,
        max_top_k: int,
        presign_expiry_s: int,
        reranking: Reranking | None = None,
        follower: ModelFollower | None = None,
        features_cache: FeatureCache | None = None,
    ) -> None:
        self.embedder = embedder
        self.follower = follower
        self.store = store
        self.blobs = blobs
        self.max_top_k = max_top_k
        self.presign_expiry_s = presign_expiry_s
        self.reranking = reranking or Reranking()
        self.features_cache = features_cache or FeatureCache(self.reranking.features_cache_bytes)
        self._dim: int | None = None

    def with_embedder(self, embedder: QueryEmbedder) -> SearchEngine:
        """The same engine over another embedder (a batching or remote one)."""
        return SearchEngine(embedder, self.store, self.blobs, max_top_k=self.max_top_k,
                            presign_expiry_s=self.presign_expiry_s, reranking=self.reranking,
                            follower=self.follower, features_cache=self.features_cache)

    @property
    def dim(self) -> int:
        """Descriptor dimension of the collection (from its stored model spec)."""
        if self._dim is None:
            self._dim = int(self.store.describe().spec.get("dim", 0)) or self.embedder.spec.dim
        return self._dim

    def search(self, query: Query, top_k: int = DEFAULT_TOP_K, filter_expr: str = "",
               min_score: float | None = None, *, qe_n: int | None = None,
               verify: bool | None = None, params: SearchParams | None = None) -> SearchResult:
        """The `top_k` stored images most like the query, best first.

        `qe_n`, `verify` and `params` override the engine's and the store's defaults for this
        query (None: keep them).
        """
        started = time.perf_counter()
        options = SearchOptions.checked(
            max_top_k=self.max_top_k, top_k=top_k, filter_expr=filter_expr, min_score=min_score,
            qe_n=qe_n, verify=verify, params=params)
        return self._search(query, options, self._prepare(query), started)

    def rank(self, query: Query, top_k: int = DEFAULT_TOP_K, filter_expr: str = "",
             min_score: float | None = None, *, qe_n: int | None = None,
             verify: bool | None = None, params: SearchParams | None = None) -> RankResult:
        """Like `search`, but ids and scores only: cheap enough for deep rankings."""
        started = time.perf_counter()
        options = SearchOptions.checked(
            max_top_k=self.max_top_k, top_k=top_k, filter_expr=filter_expr, min_score=min_score,
            ids_only=True, qe_n=qe_n, verify=verify, params=params)
        return self._rank(query, options, self._prepare(query), started)

    def run(self, query: Query, options: SearchOptions) -> SearchResult | RankResult:
        """`rank` or `search`, as the (checked) options say."""
        started = time.perf_counter()
        return self._run(query, options, self._prepare(query), started)

    def run_many(
        self, queries: Sequence[tuple[Query | LookalikeError, SearchOptions]]
    ) -> list[SearchResult | RankResult | LookalikeError | EmbedderError]:
        """One result or error per query, in order; image queries are embedded in one call."""
        images = [q.image for q, _ in queries if isinstance(q, Query) and q.image is not None]
        outcomes = iter(self._embed(images)[0] if images else [])
        out: list[SearchResult | RankResult | LookalikeError | EmbedderError] = []
        for query, options in queries:
            if isinstance(query, LookalikeError):
                out.append(query)
                continue
            embedded = next(outcomes) if query.image is not None else None
            try:
                started = time.perf_counter()
                prepared = self._prepare(query, embedded)
                out.append(self._run(query, options, prepared, started))
            except (LookalikeError, EmbedderError) as exc:
                out.append(exc)
        return out

    def _run(self, query: Query, options: SearchOptions, prepared: _Prepared,
             started: float) -> SearchResult | RankResult:
        call = self._rank if options.ids_only else self._search
        return call(query, options, prepared, started)

    def _search(self, query: Query, options: SearchOptions, prepared: _Prepared,
                started: float) -> SearchResult:
        hits = self._hits(query, options, prepared)
        return SearchResult(hits=hits, took_ms=_ms_since(started), collection=self.store.name,
                            embed_ms=prepared.embed_ms, queue_ms=prepared.queue_ms)

    def _rank(self, query: Query, options: SearchOptions, prepared: _Prepared,
              started: float) -> RankResult:
        if self._verifies(query, options):
            # Verification needs each candidate's sha256, which only full hits carry.
            ranked = [ScoredId(h.image.id, h.score, h.inliers)
                      for h in self._hits(query, options, prepared)]
        else:
            ranked = self.store.search_ids(
                self._expanded(prepared, options), options.top_k,
                options.filter_expr, prepared.exclude, options.min_score, options.params,
            )[0]
        return RankResult(ranked=ranked, took_ms=_ms_since(started), collection=self.store.name,
                          embed_ms=prepared.embed_ms, queue_ms=prepared.queue_ms)

    def _hits(self, query: Query, options: SearchOptions, prepared: _Prepared) -> list[SearchHit]:
        """Hits best first: after query expansion and verification where they apply."""
        top_k = options.top_k
        vector = self._expanded(prepared, options)
        if not self._verifies(query, options):
            return self.store.search(
                vector, top_k, options.filter_expr, prepared.exclude, options.min_score,
                options.params,
            )[0]
        candidates = self.store.search(
            vector, max(top_k, self.reranking.verify_top_n), options.filter_expr,
            prepared.exclude, options.min_score, options.params,
        )[0]
        return self._verified(query, candidates)[:top_k]

    def _verifies(self, query: Query, options: SearchOptions) -> bool:
        """Whether this query is verified: a raw vector has no image to take features from."""
        wanted = self.reranking.verify if options.verify is None else options.verify
        return wanted and query.vector is None

    def _expanded(self, prepared: _Prepared, options: SearchOptions) -> NDArray[np.float32]:
        """The query vector after alpha-QE over its nearest neighbours (same filter and
        exclusions), or as it was when QE is off."""
        qe_n = self.reranking.qe_n if options.qe_n is None else options.qe_n
        if qe_n == 0:
            return prepared.vector
        neighbours = self.store.search_ids(
            prepared.vector, qe_n, options.filter_expr, prepared.exclude, None, options.params
        )[0]
        stored = self.store.get_vectors([n.id for n in neighbours])
        # A neighbour deleted since the search has no vector left; it just drops out.
        found = [(n.score, v) for n, v in zip(neighbours, stored, strict=True) if v is not None]
        if not found:
            return prepared.vector
        return alpha_qe(
            prepared.vector, np.stack([v for _, v in found])[None],
            np.asarray([[score for score, _ in found]], dtype=np.float32),
            self.reranking.qe_alpha,
        )

    def _verified(self, query: Query, candidates: list[SearchHit]) -> list[SearchHit]:
        """`candidates` re-ranked by inlier count (verified first), each with its count."""
        if not candidates:
            return []
        config = self.reranking.local_features
        workers = max(1, min(self.reranking.fetch_workers, len(candidates)))
        with ThreadPoolExecutor(workers, thread_name_prefix="verify") as pool:
            wanted = pool.submit(self._query_features, query)
            stored = list(pool.map(self._stored_features, [h.image.sha256 for h in candidates]))
            query_features = wanted.result()
        counts = ([0] * len(candidates) if query_features is None else
                  _count_inliers(query_features, stored, config, self.reranking.policy))
        order = verified_order([h.score for h in candidates], counts,
                               self.reranking.policy.min_inliers)
        return [replace(candidates[i], inliers=counts[i]) for i in order]

    def _query_features(self, query: Query) -> LocalFeatures | None:
        """The query image's local features, or a stored query's; None where there are none."""
        if query.image is not None:
            try:
                # Decoded as stored images were at ingest, so that query and stored features
                # come from images of the same scale.
                return features_of(query.image, self.reranking.max_pixels,
                                   self.reranking.local_features)
            except ImageError as exc:
                raise InvalidArgument(f"query image: {exc}") from None
        assert query.image_id is not None
        meta = self.store.get([query.image_id])[0]
        return None if meta is None else self._stored_features(meta.sha256)

    def _stored_features(self, sha256: str) -> LocalFeatures | None:
        """A stored image's local features; None where they were never stored or are unreadable."""
        if (cached := self.features_cache.get(sha256)) is not None:
            return cached
        try:
            features = LocalFeatures.from_bytes(self.blobs.get(features_key(sha256)))
        except (NotFound, LocalFeatureError):
            return None
        self.features_cache.put(sha256, features)
        return features

    def _embed(self, images: Sequence[bytes]) -> tuple[list[EmbedOutcome], float, float]:
        """Outcomes, model time (ms: the batch forward time where the embedder reports it) and
        the time (ms) spent queued for the model."""
        forward_ms.set(None)
        queue_ms.set(0.0)
        started = time.perf_counter()
        outcomes = self.embedder.embed_bytes(images)
        reported = forward_ms.get()
        return outcomes, _ms_since(started) if reported is None else reported, queue_ms.get()

    def _prepare(self, query: Query, embedded: EmbedOutcome | None = None) -> _Prepared:
        """The query vector and the ids to leave out (a stored query excludes itself); an image
        query is embedded here unless `embedded` (its outcome in a batch) is given."""
        if query.vector is not None:
            return _Prepared(self._check_vector(query.vector))
        if query.image is not None:
            embed_ms = waited_ms = 0.0
            if embedded is None:
                outcomes, embed_ms, waited_ms = self._embed([query.image])
                embedded = outcomes[0]
            if embedded.error is not None:
                raise InvalidArgument(f"query image: {embedded.error}")
            self._check_model()
            assert embedded.vector is not None
            return _Prepared(np.asarray(embedded.vector, dtype=np.float32)[None, :],
                             embed_ms=embed_ms, queue_ms=waited_ms)
        assert query.image_id is not None
        stored = self.store.get_vectors([query.image_id])[0]
        if stored is None:
            raise NotFound(f"no stored image with id {query.image_id} in {self.store.name!r}")
        return _Prepared(np.asarray(stored, dtype=np.float32)[None, :], (query.image_id,))

    def _check_model(self) -> None:
        """Follow the collection to the model a roll-out staged for it, or refuse image queries
        once it serves another model (a re-index moved its alias): their descriptors would not
        compare with the stored ones."""
        live = self.store.live_spec()
        if live and live != self.embedder.spec.to_dict():
            staged = self.follower.served_for(live) if self.follower is not None else None
            if staged is not None:
                # One attribute store: a query in flight finishes with the model it started.
                self.embedder = staged
                self._dim = None
                return
            raise ModelSpecMismatch(
                f"collection {self.store.name!r} now serves vectors of another model "
                f"({live.get('backbone')}, dim {live.get('dim')}), but this server embeds "
                f"queries with {self.embedder.spec.backbone}: restart it with that collection's "
                "model settings"
            )

    def _check_vector(self, vector: NDArray[np.float32]) -> NDArray[np.float32]:
        """A raw query vector as a unit 1 x D row; refused when its dimension or values are off."""
        v = np.asarray(vector, dtype=np.float32).reshape(-1)
        if v.shape[0] != self.dim:
            raise InvalidArgument(
                f"query vector has {v.shape[0]} dimensions; collection {self.store.name!r} "
                f"holds {self.dim}-dimensional descriptors"
            )
        norm = float(np.linalg.norm(v))
        if not np.isfinite(norm) or norm == 0.0:
            raise InvalidArgument("query vector must be finite and non-zero")
        return (v / norm)[None, :]

    def hit_blobs(self, hit: SearchHit, with_thumbnail: bool) -> HitBlobs:
        """Presigned URLs where the blob store gives them, and the thumbnail bytes if asked."""
        thumb_url = self.blobs.presigned_url(hit.image.thumb_key, self.presign_expiry_s) or ""
        image_url = self.blobs.presigned_url(hit.image.blob_key, self.presign_expiry_s) or ""
        thumbnail = b""
        if with_thumbnail:
            try:
                thumbnail = self.blobs.get(hit.image.thumb_key)
            except NotFound:
                thumbnail = b""
        return HitBlobs(thumbnail=thumbnail, thumbnail_url=thumb_url, image_url=image_url)
