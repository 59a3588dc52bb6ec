"""Search as a domain operation: embed the query (or fetch a stored vector), ask the vector store."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from lookalike.core.blob_store import BlobStore
from lookalike.core.errors import InvalidArgument, LookalikeError, NotFound
from lookalike.core.schemas import ScoredId, SearchHit
from lookalike.core.vector_store import VectorStore
from lookalike.embedder.errors import EmbedderError
from lookalike.embedder.runtime import EmbedOutcome
from lookalike.embedder.spec import EmbedderSpec
from lookalike.services.callctx import forward_ms

DEFAULT_TOP_K = 10


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
    """How many results, which ones, and how much of each."""

    top_k: int = DEFAULT_TOP_K
    filter_expr: str = ""
    min_score: float | None = None
    ids_only: bool = False


@dataclass(frozen=True, slots=True)
class SearchResult:
    """Hits best first, and the time the search took (and the model's share of it)."""

    hits: list[SearchHit]
    took_ms: float
    collection: str
    embed_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class RankResult:
    """Ids and scores best first, and the time the ranking took."""

    ranked: list[ScoredId]
    took_ms: float
    collection: str
    embed_ms: float = 0.0


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
    ) -> None:
        self.embedder = embedder
        self.store = store
        self.blobs = blobs
        self.max_top_k = max_top_k
        self.presign_expiry_s = presign_expiry_s
        self._dim: int | None = None

    def with_embedder(self, embedder: QueryEmbedder) -> SearchEngine:
        """The same engine over another embedder (a batching or remote one)."""
        return SearchEngine(embedder, self.store, self.blobs, max_top_k=self.max_top_k,
                            presign_expiry_s=self.presign_expiry_s)

    @property
    def dim(self) -> int:
        """Descriptor dimension of the collection (from its stored model spec)."""
        if self._dim is None:
            self._dim = int(self.store.describe().spec.get("dim", 0)) or self.embedder.spec.dim
        return self._dim

    def search(self, query: Query, top_k: int = DEFAULT_TOP_K, filter_expr: str = "",
               min_score: float | None = None) -> SearchResult:
        """The `top_k` stored images most like the query, best first."""
        started = time.perf_counter()
        vector, exclude, embed_ms = self._prepare(query, top_k)
        hits = self.store.search(vector, top_k or DEFAULT_TOP_K, filter_expr, exclude, min_score)[0]
        return SearchResult(hits=hits, took_ms=_ms_since(started), collection=self.store.name,
                            embed_ms=embed_ms)

    def rank(self, query: Query, top_k: int = DEFAULT_TOP_K, filter_expr: str = "",
             min_score: float | None = None) -> RankResult:
        """Like `search`, but ids and scores only: cheap enough for deep rankings."""
        started = time.perf_counter()
        vector, exclude, embed_ms = self._prepare(query, top_k)
        ranked = self.store.search_ids(
            vector, top_k or DEFAULT_TOP_K, filter_expr, exclude, min_score
        )[0]
        return RankResult(ranked=ranked, took_ms=_ms_since(started), collection=self.store.name,
                          embed_ms=embed_ms)

    def run(self, query: Query, options: SearchOptions) -> SearchResult | RankResult:
        """`rank` or `search`, as the options say."""
        call = self.rank if options.ids_only else self.search
        return call(query, options.top_k, options.filter_expr, options.min_score)

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
            try:
                if query.image is not None:
                    outcome = next(outcomes)
                    if outcome.error is not None:
                        raise InvalidArgument(f"query image: {outcome.error}")
                    query = Query(vector=outcome.vector)
                out.append(self.run(query, options))
            except (LookalikeError, EmbedderError) as exc:
                out.append(exc)
        return out

    def _embed(self, images: Sequence[bytes]) -> tuple[list[EmbedOutcome], float]:
        """Outcomes and model time (ms): the batch forward time where the embedder reports it."""
        forward_ms.set(None)
        started = time.perf_counter()
        outcomes = self.embedder.embed_bytes(images)
        reported = forward_ms.get()
        return outcomes, _ms_since(started) if reported is None else reported

    def _prepare(
        self, query: Query, top_k: int
    ) -> tuple[NDArray[np.float32], tuple[int, ...], float]:
        """The 1 x D query vector, the ids to leave out (a stored query excludes itself), and
        the model time spent on it."""
        top_k = top_k or DEFAULT_TOP_K
        if not 1 <= top_k <= self.max_top_k:
            raise InvalidArgument(f"top_k must be between 1 and {self.max_top_k}, got {top_k}")
        if query.vector is not None:
            return self._check_vector(query.vector), (), 0.0
        if query.image is not None:
            outcomes, embed_ms = self._embed([query.image])
            if outcomes[0].error is not None:
                raise InvalidArgument(f"query image: {outcomes[0].error}")
            assert outcomes[0].vector is not None
            return np.asarray(outcomes[0].vector, dtype=np.float32)[None, :], (), embed_ms
        assert query.image_id is not None
        stored = self.store.get_vectors([query.image_id])[0]
        if stored is None:
            raise NotFound(f"no stored image with id {query.image_id} in {self.store.name!r}")
        return np.asarray(stored, dtype=np.float32)[None, :], (query.image_id,), 0.0

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
