"""Vectors in Milvus: Milvus Lite (a local file) by default, a server or cluster by URI.

One physical collection per (name, model spec), named `<name>__<spec fingerprint>`; the public
name is an alias that points at the live one, so a re-index with a new model can swap atomically.
The model spec is stored in the collection's properties and checked on every open.

A collection created with database-side augmentation (DBA) also keeps each image's descriptor
as it came from the model in a second vector field, `raw` (FLAT, exact), and its DBA parameters
in a property: `embedding` can then always be recomputed from `raw` (see ingestion/dba.py).
Loading such a collection holds both vector fields in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from lookalike.core.errors import (
    ConfigError,
    InvalidArgument,
    InvalidFilter,
    ModelSpecMismatch,
    StoreUnavailable,
)
from lookalike.core.schemas import ImageMeta, ImageRecord, ScoredId, SearchHit
from lookalike.core.settings import MilvusSettings

SPEC_PROPERTY = "lookalike.model_spec"
DBA_PROPERTY = "lookalike.dba"
RAW_FIELD = "raw"
MAX_TOP_K = 16384
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,200}$")
VectorField = Literal["embedding", "raw"]
META_FIELDS = (
    "id", "sha256", "blob_key", "source", "label", "tags", "meta", "width", "height",
    "ingested_at",
)


@dataclass(frozen=True, slots=True)
class DbaParams:
    """Database-side augmentation: `k` neighbours averaged in, weighted by similarity ** alpha."""

    k: int
    alpha: float

    def to_json(self) -> str:
        """The collection property's value."""
        return json.dumps({"k": self.k, "alpha": self.alpha}, sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> DbaParams:
        """Parse a value written by `to_json`."""
        value = json.loads(raw)
        return cls(k=int(value["k"]), alpha=float(value["alpha"]))


@dataclass(frozen=True, slots=True)
class RawNeighbours:
    """One query's nearest raw descriptors, best first: ids (K), similarities (K), vectors (K x D)."""

    ids: NDArray[np.int64]
    scores: NDArray[np.float32]
    vectors: NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class CollectionInfo:
    """What a collection holds and how it is indexed."""

    name: str
    physical_name: str
    count: int
    index_type: str
    index_params: dict[str, Any]
    metric_type: str
    spec: dict[str, Any]


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

    def search(
        self,
        vectors: NDArray[np.float32],
        top_k: int,
        filter_expr: str = "",
        exclude_ids: Sequence[int] = (),
        min_score: float | None = None,
    ) -> list[list[SearchHit]]:
        """Nearest stored images per query vector (inner product on L2-normalised vectors).

        With `min_score`, a range search: only hits scoring above it, at most `top_k`.
        """
        ...

    def search_ids(
        self,
        vectors: NDArray[np.float32],
        top_k: int,
        filter_expr: str = "",
        exclude_ids: Sequence[int] = (),
        min_score: float | None = None,
    ) -> list[list[ScoredId]]:
        """Like `search`, but only ids and scores: cheaper for deep rankings."""
        ...

    def ids_matching(self, filter_expr: str, limit: int = MAX_TOP_K) -> list[int]:
        """Ids of stored images that match a filter expression (at most `limit`)."""
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


def spec_fingerprint(spec: Mapping[str, Any]) -> str:
    """A short stable hash of a model spec."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def physical_name(name: str, spec: Mapping[str, Any]) -> str:
    """The physical collection that holds `name` for this model spec."""
    return f"{name}__{spec_fingerprint(spec)}"


def check_collection_name(name: str) -> str:
    """`name` if Milvus accepts it as a collection or alias name."""
    if not _NAME_RE.match(name) or "__" in name:
        raise ConfigError(
            f"collection name {name!r} is invalid: use letters, digits and single underscores, "
            "starting with a letter or underscore"
        )
    return name


def live_collection_spec(client: Any, name: str) -> dict[str, Any] | None:
    """The model spec of the collection the alias `name` serves; None when there is none."""
    check_collection_name(name)
    try:
        live = MilvusVectorStore._resolve_alias(client, name)
        return None if live is None else MilvusVectorStore._stored_spec(client, live)
    except Exception as exc:
        raise StoreUnavailable(f"cannot read collection {name!r}: {exc}") from exc


def _spec_diff(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> str:
    keys = sorted(set(stored) | set(wanted))
    diffs = [f"{k}: {stored.get(k)!r} != {wanted.get(k)!r}" for k in keys
             if stored.get(k) != wanted.get(k)]
    return "; ".join(diffs)


def _index_params(settings: MilvusSettings) -> tuple[str, dict[str, int]]:
    match settings.index_type:
        case "HNSW":
            return "HNSW", {"M": settings.hnsw_m, "efConstruction": settings.hnsw_ef_construction}
        case "FLAT":
            return "FLAT", {}
        case "IVF_FLAT" | "IVF_SQ8":
            return settings.index_type, {"nlist": settings.ivf_nlist}
    raise ConfigError(f"unknown index type {settings.index_type!r}")


def _search_params(
    settings: MilvusSettings, top_k: int, min_score: float | None = None
) -> dict[str, Any]:
    params: dict[str, Any] = {}
    match settings.index_type:
        case "HNSW":
            params["ef"] = max(settings.search_ef, top_k)
        case "IVF_FLAT" | "IVF_SQ8":
            params["nprobe"] = settings.ivf_nprobe
    if min_score is not None:
        # Range search on IP: keep radius < score <= range_filter (scores of unit vectors <= 1).
        params["radius"] = float(min_score)
        params["range_filter"] = 1.0 + 1e-3
    return {"params": params}


def _meta_from_entity(entity: Mapping[str, Any]) -> ImageMeta:
    return ImageMeta(
        id=int(entity["id"]),
        sha256=str(entity["sha256"]),
        blob_key=str(entity["blob_key"]),
        source=str(entity["source"]),
        label=str(entity["label"]),
        tags=tuple(str(t) for t in (entity.get("tags") or ())),
        meta=dict(entity.get("meta") or {}),
        width=int(entity["width"]),
        height=int(entity["height"]),
        ingested_at=int(entity["ingested_at"]),
    )


def _has_raw(description: Mapping[str, Any]) -> bool:
    return any(f.get("name") == RAW_FIELD for f in description.get("fields", []))


def _refused(message: str, filter_expr: str, what: str) -> InvalidFilter | StoreUnavailable:
    """The typed error for a Milvus refusal: the filter's fault when there is one, else the
    store's."""
    if filter_expr.strip():
        return InvalidFilter(f"filter {filter_expr!r} was refused: {message}")
    return StoreUnavailable(f"{what} failed: {message}")


def connect_milvus(uri: str, settings: MilvusSettings) -> Any:
    """A MilvusClient for `uri`, with a clear error when it cannot be opened."""
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    if "://" not in uri:
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        # Milvus Lite keeps no MVCC timestamps, so every query_iterator would log a warning that
        # it falls back to client-side ones: expected here, and noise on the console.
        logging.getLogger("pymilvus.client.iterator.query_iterator").setLevel(logging.ERROR)
    try:
        return MilvusClient(
            uri=uri, token=settings.token.get_secret_value(), timeout=settings.timeout_s
        )
    except MilvusException as exc:
        hint = (
            " (Milvus Lite allows one process per data file: is `lookalike serve` running on it?"
            " Stop it, or point LOOKALIKE_MILVUS__URI at a Milvus server.)"
            if "://" not in uri else ""
        )
        raise StoreUnavailable(f"cannot open Milvus at {uri}: {exc.message}{hint}") from exc


class MilvusVectorStore:
    """A `VectorStore` over one Milvus collection, reached through its alias."""

    def __init__(self, client: Any, name: str, settings: MilvusSettings) -> None:
        self._client = client
        self.name = name
        self._settings = settings

    @classmethod
    def open(
        cls,
        client: Any,
        name: str,
        spec: Mapping[str, Any],
        dim: int,
        settings: MilvusSettings,
        *,
        create: bool = True,
        dba: DbaParams | None = None,
    ) -> MilvusVectorStore:
        """Open collection `name` for `spec`, creating it when missing and `create` is set.

        A collection created with `dba` keeps raw descriptors for database-side augmentation.
        Raises ModelSpecMismatch when `name` holds vectors of another model.
        """
        check_collection_name(name)
        try:
            live = cls._resolve_alias(client, name)
            if live is None:
                if not create:
                    raise ConfigError(f"collection {name!r} does not exist")
                physical = physical_name(name, spec)
                cls._create(client, physical, spec, dim, settings, dba)
                client.create_alias(physical, name)
            else:
                stored = cls._stored_spec(client, live)
                if stored != dict(spec):
                    raise ModelSpecMismatch(
                        f"collection {name!r} was built with another model "
                        f"({_spec_diff(stored, spec)}); use the model it was built with, "
                        "another collection name, or re-index it"
                    )
            client.load_collection(name)
        except (ConfigError, ModelSpecMismatch):
            raise
        except Exception as exc:
            raise StoreUnavailable(f"cannot open collection {name!r}: {exc}") from exc
        return cls(client, name, settings)

    @classmethod
    def attach(cls, client: Any, name: str, settings: MilvusSettings) -> MilvusVectorStore:
        """Open the existing collection `name` whatever its model spec (for maintenance)."""
        check_collection_name(name)
        try:
            if cls._resolve_alias(client, name) is None:
                raise ConfigError(f"collection {name!r} does not exist")
            client.load_collection(name)
        except ConfigError:
            raise
        except Exception as exc:
            raise StoreUnavailable(f"cannot open collection {name!r}: {exc}") from exc
        return cls(client, name, settings)

    @staticmethod
    def _resolve_alias(client: Any, name: str) -> str | None:
        for collection in client.list_collections():
            if name in client.list_aliases(collection).get("aliases", []):
                return str(collection)
        return None

    @staticmethod
    def _stored_spec(client: Any, collection: str) -> dict[str, Any]:
        properties = client.describe_collection(collection).get("properties", {})
        raw = properties.get(SPEC_PROPERTY)
        return dict(json.loads(raw)) if raw else {}

    @staticmethod
    def _create(
        client: Any, physical: str, spec: Mapping[str, Any], dim: int, settings: MilvusSettings,
        dba: DbaParams | None,
    ) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("sha256", DataType.VARCHAR, max_length=64)
        schema.add_field("blob_key", DataType.VARCHAR, max_length=512)
        schema.add_field("source", DataType.VARCHAR, max_length=4096)
        schema.add_field("label", DataType.VARCHAR, max_length=512)
        schema.add_field(
            "tags", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=64, max_length=128
        )
        schema.add_field("meta", DataType.JSON)
        schema.add_field("width", DataType.INT32)
        schema.add_field("height", DataType.INT32)
        schema.add_field("ingested_at", DataType.INT64)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=dim)
        index_type, params = _index_params(settings)
        index_params = client.prepare_index_params()
        index_params.add_index(
            field_name="embedding", index_type=index_type, metric_type="IP", params=params
        )
        properties = {SPEC_PROPERTY: json.dumps(dict(spec), sort_keys=True)}
        if dba is not None:
            schema.add_field(RAW_FIELD, DataType.FLOAT_VECTOR, dim=dim)
            # Exact neighbours: DBA must not depend on what an approximate index happens to find.
            index_params.add_index(
                field_name=RAW_FIELD, index_type="FLAT", metric_type="IP", params={}
            )
            properties[DBA_PROPERTY] = dba.to_json()
        client.create_collection(
            physical, schema=schema, index_params=index_params, consistency_level="Strong"
        )
        client.alter_collection_properties(physical, properties=properties)

    def existing_ids(self, ids: Sequence[int]) -> set[int]:
        if not ids:
            return set()
        rows = self._call(
            "query", self.name, filter=f"id in {[int(i) for i in ids]}", output_fields=["id"]
        )
        return {int(row["id"]) for row in rows}

    def insert(self, records: Sequence[ImageRecord]) -> None:
        """Store `records`; where the collection keeps raw descriptors, raw = embedding."""
        if not records:
            return
        with_raw = self.has_raw()
        rows = []
        for record in records:
            m = record.meta
            vector = np.asarray(record.embedding, dtype=np.float32).tolist()
            row = {
                "id": m.id, "sha256": m.sha256, "blob_key": m.blob_key, "source": m.source,
                "label": m.label, "tags": list(m.tags), "meta": m.meta, "width": m.width,
                "height": m.height, "ingested_at": m.ingested_at, "embedding": vector,
            }
            if with_raw:
                row[RAW_FIELD] = vector
            rows.append(row)
        self._call("insert", self.name, data=rows)

    def get(self, ids: Sequence[int]) -> list[ImageMeta | None]:
        found = {
            int(row["id"]): _meta_from_entity(row)
            for row in self._get_rows(ids, list(META_FIELDS))
        }
        return [found.get(int(i)) for i in ids]

    def get_vectors(self, ids: Sequence[int]) -> list[NDArray[np.float32] | None]:
        found = {
            int(row["id"]): np.asarray(row["embedding"], dtype=np.float32)
            for row in self._get_rows(ids, ["id", "embedding"])
        }
        return [found.get(int(i)) for i in ids]

    def _get_rows(self, ids: Sequence[int], fields: list[str]) -> list[Mapping[str, Any]]:
        if not ids:
            return []
        return list(self._call("get", self.name, ids=[int(i) for i in ids], output_fields=fields))

    def search(
        self,
        vectors: NDArray[np.float32],
        top_k: int,
        filter_expr: str = "",
        exclude_ids: Sequence[int] = (),
        min_score: float | None = None,
    ) -> list[list[SearchHit]]:
        results = self._search(
            vectors, top_k, filter_expr, exclude_ids, min_score, list(META_FIELDS)
        )
        return [
            [SearchHit(image=_meta_from_entity(hit["entity"] | {"id": hit["id"]}),
                       score=float(hit["distance"])) for hit in per_query]
            for per_query in results
        ]

    def search_ids(
        self,
        vectors: NDArray[np.float32],
        top_k: int,
        filter_expr: str = "",
        exclude_ids: Sequence[int] = (),
        min_score: float | None = None,
    ) -> list[list[ScoredId]]:
        results = self._search(vectors, top_k, filter_expr, exclude_ids, min_score, ["id"])
        return [
            [ScoredId(id=int(hit["id"]), score=float(hit["distance"])) for hit in per_query]
            for per_query in results
        ]

    def _search(
        self,
        vectors: NDArray[np.float32],
        top_k: int,
        filter_expr: str,
        exclude_ids: Sequence[int],
        min_score: float | None,
        output_fields: list[str],
    ) -> Any:
        if min_score is not None and not -1.0 <= min_score < 1.0:
            raise InvalidArgument(f"min_score must be in [-1, 1), got {min_score}")
        if not 1 <= top_k <= MAX_TOP_K:
            raise InvalidArgument(f"top_k must be between 1 and {MAX_TOP_K}, got {top_k}")
        if vectors.ndim != 2 or len(vectors) == 0:
            raise InvalidArgument(f"expected an N x D array of query vectors, got {vectors.shape}")
        clauses = [f"({filter_expr})"] if filter_expr.strip() else []
        if exclude_ids:
            clauses.append(f"id not in {[int(i) for i in exclude_ids]}")
        from pymilvus.exceptions import MilvusException

        try:
            return self._client.search(
                self.name,
                data=np.asarray(vectors, dtype=np.float32).tolist(),
                limit=top_k,
                filter=" and ".join(clauses),
                output_fields=output_fields,
                search_params=_search_params(self._settings, top_k, min_score),
                anns_field="embedding",
            )
        except MilvusException as exc:
            raise _refused(exc.message, filter_expr, f"search in {self.name!r}") from exc
        except Exception as exc:
            raise StoreUnavailable(f"search in {self.name!r} failed: {exc}") from exc

    def ids_matching(self, filter_expr: str, limit: int = MAX_TOP_K) -> list[int]:
        if not filter_expr.strip():
            raise InvalidArgument("a filter expression is required (refusing to match everything)")
        from pymilvus.exceptions import MilvusException

        try:
            rows = self._client.query(
                self.name, filter=filter_expr, output_fields=["id"], limit=limit
            )
        except MilvusException as exc:
            raise InvalidFilter(f"filter {filter_expr!r} was refused: {exc.message}") from exc
        except Exception as exc:
            raise StoreUnavailable(f"query in {self.name!r} failed: {exc}") from exc
        return [int(row["id"]) for row in rows]

    def delete(self, ids: Sequence[int]) -> int:
        present = self.existing_ids(ids)
        if present:
            self._call("delete", self.name, ids=sorted(present))
        return len(present)

    def describe(self) -> CollectionInfo:
        physical = self._resolve_alias(self._client, self.name) or self.name
        index_type, params = _index_params(self._settings)
        return CollectionInfo(
            name=self.name, physical_name=physical, count=self.count(), index_type=index_type,
            index_params=dict(params), metric_type="IP",
            spec=self._stored_spec(self._client, physical),
        )

    def count(self) -> int:
        rows = self._call("query", self.name, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def ping(self) -> None:
        self._call("list_collections")

    def live_collection(self) -> str:
        """The physical collection this store reads and writes now: the alias's target."""
        try:
            return self._resolve_alias(self._client, self.name) or self.name
        except Exception as exc:
            raise StoreUnavailable(f"cannot resolve collection {self.name!r}: {exc}") from exc

    def stored_spec(self) -> dict[str, Any]:
        """The model spec stored with the live collection."""
        physical = self.live_collection()
        try:
            return self._stored_spec(self._client, physical)
        except Exception as exc:
            raise StoreUnavailable(f"cannot read the spec of {physical!r}: {exc}") from exc

    def has_raw(self) -> bool:
        """Whether the collection keeps raw descriptors (it was created with DBA)."""
        return _has_raw(self._call("describe_collection", self.name))

    def dba_params(self) -> DbaParams | None:
        """The DBA parameters recorded with the collection; None when it was created without."""
        description = self._call("describe_collection", self.name)
        recorded = description.get("properties", {}).get(DBA_PROPERTY)
        return DbaParams.from_json(recorded) if recorded and _has_raw(description) else None

    def set_dba_params(self, params: DbaParams) -> None:
        """Record the DBA parameters the collection's embeddings were computed with."""
        self.require_raw()
        self._call(
            "alter_collection_properties", self.live_collection(),
            properties={DBA_PROPERTY: params.to_json()},
        )

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
        found = {
            int(row["id"]): np.asarray(row[RAW_FIELD], dtype=np.float32)
            for row in self._get_rows(ids, ["id", RAW_FIELD])
        }
        return [found.get(int(i)) for i in ids]

    def search_raw(self, vectors: NDArray[np.float32], top_k: int) -> list[RawNeighbours]:
        """Exact nearest raw descriptors per query vector, with their vectors; one per query."""
        if not 1 <= top_k <= MAX_TOP_K:
            raise InvalidArgument(f"top_k must be between 1 and {MAX_TOP_K}, got {top_k}")
        if vectors.ndim != 2 or len(vectors) == 0:
            raise InvalidArgument(f"expected an N x D array of query vectors, got {vectors.shape}")
        self.require_raw()
        results = self._call(
            "search", self.name, data=np.asarray(vectors, dtype=np.float32).tolist(),
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

    def upsert_embeddings(self, ids: Sequence[int], vectors: NDArray[np.float32]) -> int:
        """Replace the embedding of the stored `ids` (whole rows are rewritten, metadata kept).

        Ids no longer stored are skipped rather than written back; returns how many were updated.
        """
        if len(ids) != len(vectors):
            raise InvalidArgument(f"{len(ids)} ids but {len(vectors)} vectors")
        with_raw = self.has_raw()
        fields = [*META_FIELDS, *([RAW_FIELD] if with_raw else [])]
        by_id = {int(i): np.asarray(v, dtype=np.float32) for i, v in zip(ids, vectors, strict=True)}
        rows = []
        for row in self._get_rows(list(by_id), fields):
            meta = _meta_from_entity(row)
            new_row: dict[str, Any] = {
                "id": meta.id, "sha256": meta.sha256, "blob_key": meta.blob_key,
                "source": meta.source, "label": meta.label, "tags": list(meta.tags),
                "meta": meta.meta, "width": meta.width, "height": meta.height,
                "ingested_at": meta.ingested_at, "embedding": by_id[meta.id].tolist(),
            }
            if with_raw:
                new_row[RAW_FIELD] = np.asarray(row[RAW_FIELD], dtype=np.float32).tolist()
            rows.append(new_row)
        if rows:
            self._call("upsert", self.name, data=rows)
        return len(rows)

    def iter_ids(self, filter_expr: str = "", batch_size: int = 1000) -> Iterator[list[int]]:
        """Stored ids (those matching `filter_expr`, if given) in batches, in id order."""
        for rows in self._iterate(["id"], filter_expr, batch_size):
            yield [int(row["id"]) for row in rows]

    def iter_vectors(
        self, fields: Sequence[VectorField], batch_size: int = 1000
    ) -> Iterator[tuple[list[int], list[NDArray[np.float32]]]]:
        """Every row's ids and one B x D matrix per vector field asked for, in batches."""
        for rows in self._iterate(["id", *fields], "", batch_size):
            yield (
                [int(row["id"]) for row in rows],
                [np.asarray([row[f] for row in rows], dtype=np.float32) for f in fields],
            )

    def iter_records(
        self, vector_field: VectorField = "embedding", batch_size: int = 1000
    ) -> Iterator[list[ImageRecord]]:
        """Every stored image with the vector of `vector_field`, in batches, in id order."""
        for rows in self._iterate([*META_FIELDS, vector_field], "", batch_size):
            yield [
                ImageRecord(meta=_meta_from_entity(row),
                            embedding=np.asarray(row[vector_field], dtype=np.float32))
                for row in rows
            ]

    def _iterate(
        self, fields: list[str], filter_expr: str, batch_size: int
    ) -> Iterator[list[Mapping[str, Any]]]:
        from pymilvus.exceptions import MilvusException

        try:
            iterator = self._client.query_iterator(
                self.name, batch_size=batch_size, filter=filter_expr, output_fields=fields
            )
        except MilvusException as exc:
            raise _refused(exc.message, filter_expr, f"reading {self.name!r}") from exc
        except Exception as exc:
            raise StoreUnavailable(f"reading {self.name!r} failed: {exc}") from exc
        try:
            while True:
                try:
                    rows = iterator.next()
                except Exception as exc:
                    raise StoreUnavailable(f"reading {self.name!r} failed: {exc}") from exc
                if not rows:
                    return
                yield list(rows)
        finally:
            iterator.close()

    def create_version(
        self, spec: Mapping[str, Any], dim: int, dba: DbaParams | None = None
    ) -> MilvusVectorStore:
        """A new, empty physical collection for `spec`, loaded but not served yet.

        Fill it, then `point_alias` at it. One left by an interrupted run (nothing serves it) is
        dropped and created again; the one the alias serves is refused.
        """
        physical = physical_name(self.name, spec)
        try:
            if self._client.has_collection(physical):
                if self._client.list_aliases(physical).get("aliases", []):
                    raise ConfigError(
                        f"collection {physical!r} already serves {self.name!r}: "
                        "it holds vectors of this model spec"
                    )
                self._client.drop_collection(physical)
            self._create(self._client, physical, spec, dim, self._settings, dba)
            self._client.load_collection(physical)
        except ConfigError:
            raise
        except Exception as exc:
            raise StoreUnavailable(f"cannot create collection {physical!r}: {exc}") from exc
        return MilvusVectorStore(self._client, physical, self._settings)

    def point_alias(self, physical: str) -> None:
        """Serve `self.name` from the physical collection `physical`, atomically; the old one stays."""
        if not physical.startswith(f"{self.name}__"):
            raise InvalidArgument(f"{physical!r} is not a version of collection {self.name!r}")
        self._call("load_collection", physical)
        self._call("alter_alias", physical, self.name)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self._client, method)(*args, **kwargs)
        except Exception as exc:
            raise StoreUnavailable(f"Milvus {method} on {self.name!r} failed: {exc}") from exc
