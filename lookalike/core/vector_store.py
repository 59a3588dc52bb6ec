"""Vectors in Milvus: Milvus Lite (a local file) by default, a server or cluster by URI.

One physical collection per (name, model spec), named `<name>__<spec fingerprint>`; the public
name is an alias that points at the live one, so a re-index with a new model can swap atomically.
The model spec is stored in the collection's properties and checked on every open.

A collection created with database-side augmentation (DBA) also keeps each image's descriptor
as it came from the model in a second vector field, `raw` (see milvus/lifecycle.py). On a
server, a collection can also keep binary hash codes and category routes in companion
collections (see milvus/companions.py): search modes `hash_rerank` and `routed` use them, and
every write keeps them in step with the main collection.

`MilvusVectorStore` is the one class the rest of the code uses; each of its methods is a call
into the `milvus` package, which holds the work: layout (names, properties), inspection (what a
collection is), lifecycle, reads, writes, search and indexing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from lookalike.core.errors import ConfigError
from lookalike.core.milvus import indexing, inspection, lifecycle, reads, writes
from lookalike.core.milvus import search as search_modes
from lookalike.core.milvus.companions import CodeEncoder
from lookalike.core.milvus.connection import connect_milvus, served_by
from lookalike.core.milvus.inspection import LayoutCache, live_collection_spec
from lookalike.core.milvus.layout import (
    MAX_TOP_K,
    CollectionInfo,
    DbaParams,
    HashInfo,
    Layout,
    VectorField,
    physical_name,
    spec_fingerprint,
)
from lookalike.core.milvus.search import RawNeighbours
from lookalike.core.milvus.vector_index import SearchParams
from lookalike.core.schemas import ImageMeta, ImageRecord, ScoredId, SearchHit
from lookalike.core.settings import MilvusSettings

__all__ = [
    "MAX_TOP_K",
    "CollectionInfo",
    "DbaParams",
    "HashInfo",
    "Layout",
    "MilvusVectorStore",
    "RawNeighbours",
    "VectorField",
    "VectorStore",
    "connect_milvus",
    "live_collection_spec",
    "physical_name",
    "spec_fingerprint",
]


class VectorStore(Protocol):
    """One collection of image vectors and their metadata."""

    name: str

    def existing_ids(self, ids: Sequence[int]) -> set[int]:
        """Which of `ids` are stored (one query for the whole batch)."""
        ...

    def insert(self, records: Sequence[ImageRecord]) -> None:
        """Store `records` (their ids must be new)."""
        ...

    def get(self, ids: Sequence[int]) -> list[ImageMeta | None]:
        """Metadata per id, in order; None where the id is not stored."""
        ...

    def get_vectors(self, ids: Sequence[int]) -> list[NDArray[np.float32] | None]:
        """Stored embedding per id, in order; None where the id is not stored."""
        ...

    def search(self, vectors: NDArray[np.float32], top_k: int, filter_expr: str = "",
               exclude_ids: Sequence[int] = (), min_score: float | None = None,
               params: SearchParams | None = None) -> list[list[SearchHit]]:
        """Nearest stored images per query vector (inner product on L2-normalised vectors).

        With `min_score`, a range search: only hits scoring above it, at most `top_k`.
        `params` overrides the settings' search mode and parameters for these queries.
        """
        ...

    def search_ids(self, vectors: NDArray[np.float32], top_k: int, filter_expr: str = "",
                   exclude_ids: Sequence[int] = (), min_score: float | None = None,
                   params: SearchParams | None = None) -> list[list[ScoredId]]:
        """Like `search`, but only ids and scores: cheaper for deep rankings."""
        ...

    def ids_matching(self, filter_expr: str, limit: int = MAX_TOP_K) -> list[int]:
        """Ids of stored images that match a filter expression (at most `limit`)."""
        ...

    def page(self, filter_expr: str, offset: int, limit: int) -> list[ImageMeta]:
        """Stored images matching `filter_expr` ("" for all) in id order, `limit` of them after
        the first `offset`; offset + limit is at most MAX_TOP_K."""
        ...

    def count_matching(self, filter_expr: str) -> int:
        """How many stored images match `filter_expr` ("" for all)."""
        ...

    def label_counts(self, filter_expr: str = "") -> dict[str, int]:
        """Images per label ("" for unlabelled) among those matching `filter_expr`."""
        ...

    def delete(self, ids: Sequence[int]) -> int:
        """Remove the vectors of `ids` (blobs are the caller's); how many were stored."""
        ...

    def describe(self) -> CollectionInfo:
        """Name, size, index and model spec of the collection."""
        ...

    def count(self) -> int:
        """How many images are stored."""
        ...

    def ping(self) -> None:
        """Raise StoreUnavailable when the store cannot be reached."""
        ...

    def seal(self, timeout_s: float = 600.0, *, strict: bool = True) -> bool:
        """Flush what was written and wait until the indexes cover it; whether they do."""
        ...

    def live_spec(self) -> dict[str, Any]:
        """The model spec of the collection served now (cached for a few seconds)."""
        ...


class MilvusVectorStore:
    """A `VectorStore` over one Milvus collection, reached through its alias."""

    def __init__(self, client: Any, name: str, settings: MilvusSettings) -> None:
        self._served = served_by(client, name, settings)
        self.name = name
        self._encoder: CodeEncoder | None = None
        self._layouts = LayoutCache(lambda: inspection.read_layout(self._served))

    @property
    def settings(self) -> MilvusSettings:
        """The Milvus settings this store searches with."""
        return self._served.settings

    @property
    def client(self) -> Any:
        """The MilvusClient this store talks through (for operator actions on other
        collections of the same Milvus)."""
        return self._served.client

    @classmethod
    def open(
        cls, client: Any, name: str, spec: Mapping[str, Any], dim: int,
        settings: MilvusSettings, *, create: bool = True, dba: DbaParams | None = None,
    ) -> MilvusVectorStore:
        """Open collection `name` for `spec`, creating it when missing and `create` is set.

        A collection created with `dba` keeps raw descriptors for database-side augmentation.
        Raises ModelSpecMismatch when `name` holds vectors of another model.
        """
        lifecycle.open_collection(client, name, spec, dim, settings, create=create, dba=dba)
        return cls(client, name, settings)

    @classmethod
    def attach(cls, client: Any, name: str, settings: MilvusSettings) -> MilvusVectorStore:
        """Open the existing collection `name` whatever its model spec (for maintenance)."""
        lifecycle.attach_collection(client, name)
        return cls(client, name, settings)

    def existing_ids(self, ids: Sequence[int]) -> set[int]:
        return reads.existing_ids(self._served, ids)

    def insert(self, records: Sequence[ImageRecord]) -> None:
        """Store `records`; where the collection keeps raw descriptors, raw = embedding (see
        milvus/writes.py for the order of the companions' writes)."""
        writes.insert(self._served, self._layouts, self._encoder, records)

    def get(self, ids: Sequence[int]) -> list[ImageMeta | None]:
        return reads.get_metas(self._served, ids)

    def get_vectors(self, ids: Sequence[int]) -> list[NDArray[np.float32] | None]:
        return reads.get_vectors(self._served, ids)

    def search(self, vectors: NDArray[np.float32], top_k: int, filter_expr: str = "",
               exclude_ids: Sequence[int] = (), min_score: float | None = None,
               params: SearchParams | None = None) -> list[list[SearchHit]]:
        return search_modes.search_hits(self._served, self._layouts, self._encoder, vectors,
                                        top_k, filter_expr, exclude_ids, min_score, params)

    def search_ids(self, vectors: NDArray[np.float32], top_k: int, filter_expr: str = "",
                   exclude_ids: Sequence[int] = (), min_score: float | None = None,
                   params: SearchParams | None = None) -> list[list[ScoredId]]:
        return search_modes.search_ids(self._served, self._layouts, self._encoder, vectors,
                                       top_k, filter_expr, exclude_ids, min_score, params)

    def ids_matching(self, filter_expr: str, limit: int = MAX_TOP_K) -> list[int]:
        return reads.ids_matching(self._served, filter_expr, limit)

    def page(self, filter_expr: str, offset: int, limit: int) -> list[ImageMeta]:
        """Stored images matching `filter_expr` in id order: `limit` after the first `offset`."""
        return reads.page(self._served, filter_expr, offset, limit)

    def count_matching(self, filter_expr: str) -> int:
        return reads.count_matching(self._served, filter_expr)

    def label_counts(self, filter_expr: str = "") -> dict[str, int]:
        """Images per label among those matching `filter_expr` (see reads.label_counts)."""
        return reads.label_counts(self._served, filter_expr)

    def delete(self, ids: Sequence[int]) -> int:
        """Delete codes, then vectors; take them out of their categories' means."""
        return writes.delete(self._served, self._layouts, ids)

    def describe(self) -> CollectionInfo:
        layout = self.layout(refresh=True)
        return CollectionInfo(
            name=self.name, physical_name=layout.physical, count=self.count(),
            index_type=layout.index_type, index_params=dict(layout.index_params),
            metric_type="IP", spec=inspection.collection_spec(self.client, layout.physical),
        )

    def count(self) -> int:
        return reads.count(self._served)

    def layout(self, refresh: bool = False) -> Layout:
        """What the live collection keeps; read again after a few seconds (LAYOUT_TTL_S), so
        that an alias swap (a re-index) is followed."""
        return self._layouts.get(refresh)

    def seal(self, timeout_s: float = 600.0, *, strict: bool = True) -> bool:
        """Flush what was written and wait until the indexes cover it; whether they do (see
        indexing.seal)."""
        return indexing.seal(self._served, self.layout(refresh=True), timeout_s, strict)

    def rebuild_index(
        self, index_type: str = "", params: Mapping[str, str] | None = None,
        timeout_s: float = 600.0,
    ) -> Layout:
        """Build the live collection's float index afresh (see indexing.rebuild_index); the
        layout read afterwards."""
        return indexing.rebuild_index(self._served, self._layouts, index_type, params or {},
                                      timeout_s)

    def live_spec(self) -> dict[str, Any]:
        return dict(self.layout().spec)

    def hash_info(self) -> HashInfo | None:
        """The binary codes the collection keeps; None when it keeps none."""
        return self.layout(refresh=True).hash

    def use_encoder(self, encoder: CodeEncoder) -> None:
        """Encode queries and new images with `encoder`: it must be the one that made the
        collection's codes."""
        info = self.hash_info()
        if info is not None and info.encoder_id != encoder.id:
            raise ConfigError(
                f"collection {self.name!r} keeps codes of hash {info.encoder_id}, "
                f"not of {encoder.id}"
            )
        self._encoder = encoder

    def build_codes(self, encoder: CodeEncoder, batch_size: int = 1000) -> int:
        """(Re)compute every stored image's code with `encoder` into a new codes collection and
        record it; searches in hash_rerank mode use it from then on. Server only."""
        physical, floats = indexing.create_codes(self._served, encoder)
        self._encoder = encoder
        written = indexing.fill_codes(self._served, physical, encoder, floats, batch_size)
        self.layout(refresh=True)
        return written

    def rebuild_routes(self, batch_size: int = 1000) -> int:
        """Recompute every category's mean from the stored vectors; how many categories."""
        return indexing.rebuild_routes(self._served, self.layout(refresh=True), batch_size)

    def ping(self) -> None:
        # A search of the served collection, not a listing: a restarted Milvus lists its
        # collections some 25 s before it searches them again, and answers queries before
        # searches (2.3.5); health must not say SERVING while searches still fail.
        probe = np.zeros((1, inspection.dim_of(self._served, self.name)), dtype=np.float32)
        probe[0, 0] = 1.0
        self.search_ids(probe, 1, params=SearchParams(mode="ann"))

    def live_collection(self) -> str:
        """The physical collection this store reads and writes now: the alias's target."""
        return inspection.live_collection(self._served)

    def stored_spec(self) -> dict[str, Any]:
        """The model spec stored with the live collection."""
        return inspection.stored_spec(self._served)

    def has_raw(self) -> bool:
        """Whether the collection keeps raw descriptors (it was created with DBA)."""
        return self.layout().raw

    def dba_params(self) -> DbaParams | None:
        """The DBA parameters recorded with the collection; None when it was created without."""
        return indexing.dba_params(self._served)

    def set_dba_params(self, params: DbaParams) -> None:
        """Record the DBA parameters the collection's embeddings were computed with."""
        self.require_raw()
        indexing.record_dba_params(self._served, params)

    def require_raw(self) -> None:
        """Raise ConfigError unless the collection keeps raw descriptors."""
        if not self.has_raw():
            raise ConfigError(
                f"collection {self.name!r} ({self.live_collection()}) keeps no raw descriptors: "
                "it was created without database-side augmentation, so DBA cannot be applied "
                "to it. Set retrieval.dba_k to 0 for it, or ingest into a new collection "
                "(--collection) with retrieval.dba_k set"
            )

    def get_raw_vectors(self, ids: Sequence[int]) -> list[NDArray[np.float32] | None]:
        """Stored raw descriptor per id, in order; None where the id is not stored."""
        self.require_raw()
        return reads.get_vectors(self._served, ids, "raw")

    def search_raw(self, vectors: NDArray[np.float32], top_k: int) -> list[RawNeighbours]:
        """Exact nearest raw descriptors per query vector, with their vectors; one per query."""
        search_modes.check_queries(vectors, top_k)
        self.require_raw()
        return search_modes.search_raw(self._served, vectors, top_k)

    def upsert_embeddings(self, ids: Sequence[int], vectors: NDArray[np.float32]) -> int:
        """Replace the embedding of the stored `ids` (whole rows are rewritten, metadata kept);
        ids no longer stored are skipped. How many were updated."""
        return writes.upsert_embeddings(self._served, self._layouts, self._encoder, ids, vectors)

    def iter_ids(self, filter_expr: str = "", batch_size: int = 1000) -> Iterator[list[int]]:
        """Stored ids (those matching `filter_expr`, if given) in batches, in id order."""
        return reads.iter_ids(self._served, filter_expr, batch_size)

    def iter_vectors(
        self, fields: Sequence[VectorField], batch_size: int = 1000
    ) -> Iterator[tuple[list[int], list[NDArray[np.float32]]]]:
        """Every row's ids and one B x D matrix per vector field asked for, in batches."""
        return reads.iter_vectors(self._served, fields, batch_size)

    def iter_records(
        self, vector_field: VectorField = "embedding", batch_size: int = 1000
    ) -> Iterator[list[ImageRecord]]:
        """Every stored image with the vector of `vector_field`, in batches, in id order."""
        yield from reads.iter_records(self._served, self.layout().partitioned, vector_field,
                                      batch_size)

    def create_version(
        self, spec: Mapping[str, Any], dim: int, dba: DbaParams | None = None
    ) -> MilvusVectorStore:
        """A new, empty physical collection for `spec`, loaded but not served yet.

        Fill it, then `point_alias` at it. One left by an interrupted run (nothing serves it) is
        dropped and created again; the one the alias serves is refused.
        """
        physical = lifecycle.create_version(self._served, spec, dim, dba)
        return MilvusVectorStore(self.client, physical, self.settings)

    def point_alias(self, physical: str) -> None:
        """Serve `self.name` from the physical collection `physical`, atomically; the old one stays."""
        lifecycle.point_alias(self._served, physical)
        self.layout(refresh=True)
