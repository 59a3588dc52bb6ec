"""Search as a domain operation: embed the query (or fetch a stored vector), ask the vector store."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from lookalike.core.blob_store import BlobStore
from lookalike.core.errors import InvalidArgument, NotFound
from lookalike.core.schemas import ScoredId, SearchHit
from lookalike.core.vector_store import VectorStore
from lookalike.embedder.runtime import EmbedOutcome
from lookalike.embedder.spec import EmbedderSpec

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
    """A query image given as bytes, or the id of a stored image."""

    image: bytes | None = None
    image_id: int | None = None

    def __post_init__(self) -> None:
        if (self.image is None) == (self.image_id is None):
            raise InvalidArgument("a query needs exactly one of: image bytes, stored image id")


@dataclass(frozen=True, slots=True)
class SearchResult:
    """Hits best first, and the time the search took."""

    hits: list[SearchHit]
    took_ms: float
    collection: str


@dataclass(frozen=True, slots=True)
class RankResult:
    """Ids and scores best first, and the time the ranking took."""

    ranked: list[ScoredId]
    took_ms: float
    collection: str


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

    def search(self, query: Query, top_k: int = DEFAULT_TOP_K, filter_expr: str = "") -> SearchResult:
        """The `top_k` stored images most like the query, best first."""
        started = time.perf_counter()
        vector, exclude = self._prepare(query, top_k)
        hits = self.store.search(vector, top_k or DEFAULT_TOP_K, filter_expr, exclude)[0]
        return SearchResult(hits=hits, took_ms=_ms_since(started), collection=self.store.name)

    def rank(self, query: Query, top_k: int = DEFAULT_TOP_K, filter_expr: str = "") -> RankResult:
        """Like `search`, but ids and scores only: cheap enough for deep rankings."""
        started = time.perf_counter()
        vector, exclude = self._prepare(query, top_k)
        ranked = self.store.search_ids(vector, top_k or DEFAULT_TOP_K, filter_expr, exclude)[0]
        return RankResult(ranked=ranked, took_ms=_ms_since(started), collection=self.store.name)

    def _prepare(self, query: Query, top_k: int) -> tuple[NDArray[np.float32], tuple[int, ...]]:
        """The 1 x D query vector and the ids to leave out (a stored query excludes itself)."""
        top_k = top_k or DEFAULT_TOP_K
        if not 1 <= top_k <= self.max_top_k:
            raise InvalidArgument(f"top_k must be between 1 and {self.max_top_k}, got {top_k}")
        if query.image is not None:
            outcome = self.embedder.embed_bytes([query.image])[0]
            if outcome.error is not None:
                raise InvalidArgument(f"query image: {outcome.error}")
            assert outcome.vector is not None
            return np.asarray(outcome.vector, dtype=np.float32)[None, :], ()
        assert query.image_id is not None
        stored = self.store.get_vectors([query.image_id])[0]
        if stored is None:
            raise NotFound(f"no stored image with id {query.image_id} in {self.store.name!r}")
        return np.asarray(stored, dtype=np.float32)[None, :], (query.image_id,)

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
