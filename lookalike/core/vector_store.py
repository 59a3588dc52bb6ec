"""Vectors in Milvus: Milvus Lite (a local file) by default, a server or cluster by URI.

One physical collection per (name, model spec), named `<name>__<spec fingerprint>`; the public
name is an alias that points at the live one, so a re-index with a new model can swap atomically.
The model spec is stored in the collection's properties and checked on every open.

A collection created with database-side augmentation (DBA) also keeps each image's descriptor
as it came from the model in a second vector field, `raw` (FLAT, exact), and its DBA parameters
in a property: `embedding` can then always be recomputed from `raw` (see ingestion/dba.py).
Loading such a collection holds both vector fields in memory.

On a server, a collection can also keep binary hash codes and category routes in companion
collections (see companions.py): search modes `hash_rerank` and `routed` use them, and every
write here keeps them in step with the main collection.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from lookalike.core import companions
from lookalike.core.companions import CodeEncoder
from lookalike.core.errors import (
    ConfigError,
    InvalidArgument,
    InvalidFilter,
    ModelSpecMismatch,
    StoreUnavailable,
)
from lookalike.core.filters import quote
from lookalike.core.hit_vectors import ids_and_vectors
from lookalike.core.milvus_reads import RetryingReads
from lookalike.core.schemas import ImageMeta, ImageRecord, ScoredId, SearchHit
from lookalike.core.settings import MilvusSettings
from lookalike.core.vector_index import (
    ResolvedSearch,
    SearchParams,
    check_min_score,
    check_supported,
    float_search_params,
    index_params,
    is_lite,
    rebuild_params,
    resolve,
)

SPEC_PROPERTY = "lookalike.model_spec"
DBA_PROPERTY = "lookalike.dba"
HASH_PROPERTY = "lookalike.hash"
PARTITION_PROPERTY = "lookalike.partition_by"
# Pause between an alias swap and its repeat (see `point_alias`).
ALIAS_SETTLE_S = 1.0
# The float index a rebuild asked for: Milvus Lite reports no build parameters of its own.
INDEX_PROPERTY = "lookalike.index"
CATEGORY_FIELD = "category"
# How long a store trusts what it read about its live collection (alias target, index, codes)
# before reading it again: an alias swap by a re-index is seen within this time.
LAYOUT_TTL_S = 5.0
RAW_FIELD = "raw"
MAX_TOP_K = 16384
# Label counts find and count(*) up to this many distinct labels one by one; beyond, they read
# the label field of the remaining rows.
MAX_PROBED_LABELS = 64
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
class HashInfo:
    """The binary codes a collection keeps: which encoder made them and how many bits."""

    encoder_id: str
    bits: int
    # Whether the codes collection also keeps each image's float descriptor (companions.py);
    # codes written before it could are without.
    floats: bool = False

    def to_json(self) -> str:
        """The collection property's value."""
        return json.dumps({"id": self.encoder_id, "bits": self.bits, "floats": self.floats},
                          sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> HashInfo:
        """Parse a value written by `to_json`."""
        value = json.loads(raw)
        return cls(encoder_id=str(value["id"]), bits=int(value["bits"]),
                   floats=bool(value.get("floats", False)))


@dataclass(frozen=True, slots=True)
class Layout:
    """What a store read about its live collection: where it is and what it keeps."""

    physical: str
    index_type: str
    index_params: dict[str, Any]
    # none, label or predicted: what the `category` partition key holds.
    partition_by: str
    raw: bool
    hash: HashInfo | None
    spec: dict[str, Any]
    read_at: float

    @property
    def partitioned(self) -> bool:
        """Whether rows carry a `category` partition key (and the collection has routes)."""
        return self.partition_by != "none"


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
        params: SearchParams | None = None,
    ) -> list[list[SearchHit]]:
        """Nearest stored images per query vector (inner product on L2-normalised vectors).

        With `min_score`, a range search: only hits scoring above it, at most `top_k`.
        `params` overrides the settings' search mode and parameters for these queries.
        """
        ...

    def search_ids(
        self,
        vectors: NDArray[np.float32],
        top_k: int,
        filter_expr: str = "",
        exclude_ids: Sequence[int] = (),
        min_score: float | None = None,
        params: SearchParams | None = None,
    ) -> list[list[ScoredId]]:
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


def collection_spec(client: Any, collection: str) -> dict[str, Any]:
    """The model spec stored with a physical collection; {} for one Lookalike did not create."""
    properties = client.describe_collection(collection).get("properties", {})
    raw = properties.get(SPEC_PROPERTY)
    return dict(json.loads(raw)) if raw else {}


def read_index(
    client: Any, collection: str, settings: MilvusSettings, dim: int
) -> tuple[str, dict[str, Any]]:
    """The float index of a physical collection and its build parameters.

    Milvus Lite reports no build parameters: they are then those a rebuild recorded with the
    collection, or else the settings' (which built it) where the index type is theirs.
    """
    index = dict(client.describe_index(collection, "embedding") or {})
    index_type = str(index.pop("index_type", "FLAT"))
    params = {k: v for k, v in index.items() if k not in _INDEX_INFO_KEYS}
    if params:
        return index_type, params
    recorded = client.describe_collection(collection).get("properties", {}).get(INDEX_PROPERTY)
    if recorded and json.loads(recorded).get("index_type") == index_type:
        return index_type, {k: str(v) for k, v in json.loads(recorded)["params"].items()}
    if index_type == settings.index_type:
        return index_type, {k: str(v) for k, v in index_params(settings, dim)[1].items()}
    return index_type, {}


def embedding_dim(description: Mapping[str, Any]) -> int:
    """The dimension of the `embedding` field in a collection's description (0: none)."""
    for f in description.get("fields", []):
        if f.get("name") == "embedding":
            return int(f.get("params", {}).get("dim", 0))
    return 0


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


_INDEX_INFO_KEYS = frozenset({
    "metric_type", "field_name", "index_name", "total_rows", "indexed_rows",
    "pending_index_rows", "state",
})


def _number(value: Any) -> Any:
    """A build parameter as Milvus Lite reports or we recorded it ("16") back as a number."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def _category(record: ImageRecord, partition_by: str) -> str:
    """The partition-key value of an image: its predicted class or its label, cut to what the
    field holds."""
    if partition_by != "predicted":
        return record.meta.label[:companions.MAX_CATEGORY_LEN]
    if not record.category:
        raise ConfigError(
            f"image {record.meta.source or record.meta.id} has no predicted category, and the "
            "collection is partitioned by predicted class: embed with a backbone that has an "
            "ImageNet classifier, or partition by label"
        )
    return record.category[:companions.MAX_CATEGORY_LEN]


def partition_of(description: Mapping[str, Any]) -> str:
    """What a described collection's partition key holds: none, label or predicted."""
    if not any(f.get("name") == CATEGORY_FIELD for f in description.get("fields", [])):
        return "none"
    # Collections made before `predicted` existed were partitioned by label.
    return str(description.get("properties", {}).get(PARTITION_PROPERTY, "label"))


def _row(meta: ImageMeta, vector: NDArray[np.float32]) -> dict[str, Any]:
    """A main-collection row without its optional fields (category, raw)."""
    return {
        "id": meta.id, "sha256": meta.sha256, "blob_key": meta.blob_key, "source": meta.source,
        "label": meta.label, "tags": list(meta.tags), "meta": meta.meta, "width": meta.width,
        "height": meta.height, "ingested_at": meta.ingested_at,
        "embedding": np.asarray(vector, dtype=np.float32).tolist(),
    }


def _check_multi_vector(client: Any) -> None:
    """Raise ConfigError when the server allows one vector field per collection (before 2.4)."""
    version = str(client.get_server_version()).lstrip("v")
    match = re.match(r"(\d+)\.(\d+)", version)
    if match and (int(match.group(1)), int(match.group(2))) < (2, 4):
        raise ConfigError(
            f"database-side augmentation keeps a second vector field, which Milvus {version} "
            "does not support (2.4 or newer does); set retrieval.dba_k to 0"
        )


def _has_raw(description: Mapping[str, Any]) -> bool:
    return any(f.get("name") == RAW_FIELD for f in description.get("fields", []))


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


# Refusals that are never the filter's fault: pymilvus could not reach the server, or the
# server has not loaded the collection yet (it reloads what it served after a restart).
_UNAVAILABLE_MARKERS = ("fail connecting to server", "collection not loaded")


def _refused(message: str, filter_expr: str, what: str) -> InvalidFilter | StoreUnavailable:
    """The typed error for a Milvus refusal: the filter's fault when there is one (unless the
    store could not answer at all), else the store's."""
    if filter_expr.strip() and not any(m in message.lower() for m in _UNAVAILABLE_MARKERS):
        return InvalidFilter(f"filter {filter_expr!r} was refused: {message}")
    return StoreUnavailable(f"{what} failed: {message}")


class _WithoutRpcErrorTracebacks(logging.Filter):
    """Drops pymilvus's ERROR record (message and full traceback) for each failed call.

    The stores turn a failed Milvus call into a typed error, which the CLI prints in one line
    and the server logs once per request with its status and message (an exception that is not
    mapped still reaches their handlers, traceback and all); pymilvus's record would print the
    same failure again, as a traceback, before either. Its retry warnings still pass.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


_RPC_ERROR_FILTER = _WithoutRpcErrorTracebacks()


def connect_milvus(uri: str, settings: MilvusSettings) -> Any:
    """A MilvusClient for `uri`, with a clear error when it cannot be opened."""
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    if "://" not in uri:
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
    # Milvus Lite (and a 2.3 server) return no MVCC timestamp, so every query_iterator would log a
    # warning that it falls back to client-side ones: expected, and noise on the console.
    logging.getLogger("pymilvus.client.iterator.query_iterator").setLevel(logging.ERROR)
    # Adding the same filter object again is a no-op.
    logging.getLogger("pymilvus.decorators").addFilter(_RPC_ERROR_FILTER)
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
        # Searches keep answering while a server hands a shard over (a re-index loading the new
        # collection beside the served one): reads ride out those refusals.
        self._client = (client if isinstance(client, RetryingReads)
                        else RetryingReads(client, timeout_s=settings.timeout_s))
        self.name = name
        self._settings = settings
        self._encoder: CodeEncoder | None = None
        self._layout: Layout | None = None
        self._layout_lock = threading.Lock()

    @property
    def settings(self) -> MilvusSettings:
        """The Milvus settings this store searches with."""
        return self._settings

    @property
    def client(self) -> Any:
        """The MilvusClient this store talks through (for operator actions on other
        collections of the same Milvus)."""
        return self._client

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
            cls._load(client, name)
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
            cls._load(client, name)
        except ConfigError:
            raise
        except Exception as exc:
            raise StoreUnavailable(f"cannot open collection {name!r}: {exc}") from exc
        return cls(client, name, settings)

    @classmethod
    def _load(cls, client: Any, name: str) -> None:
        """Load the collection behind alias `name` and its companions (a server may have
        released them)."""
        client.load_collection(name)
        physical = cls._resolve_alias(client, name)
        if physical is None:
            return
        for companion in (companions.codes_name(physical), companions.routes_name(physical)):
            if client.has_collection(companion):
                client.load_collection(companion)

    @staticmethod
    def _resolve_alias(client: Any, name: str) -> str | None:
        for collection in client.list_collections():
            if name in client.list_aliases(collection).get("aliases", []):
                return str(collection)
        return None

    @staticmethod
    def _stored_spec(client: Any, collection: str) -> dict[str, Any]:
        return collection_spec(client, collection)

    @staticmethod
    def _create(
        client: Any, physical: str, spec: Mapping[str, Any], dim: int, settings: MilvusSettings,
        dba: DbaParams | None,
    ) -> None:
        from pymilvus import DataType, MilvusClient

        partitioned = settings.partition_by != "none"
        index_type, params = index_params(settings, dim)
        if dba is not None:
            _check_multi_vector(client)
        schema = MilvusClient.create_schema(
            auto_id=False, enable_dynamic_field=False,
            **({"partition_key_field": CATEGORY_FIELD, "num_partitions": settings.num_partitions}
               if partitioned else {}),
        )
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
        if partitioned:
            schema.add_field(CATEGORY_FIELD, DataType.VARCHAR,
                             max_length=companions.MAX_CATEGORY_LEN, is_partition_key=True)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=dim)
        indexes = client.prepare_index_params()
        indexes.add_index(
            field_name="embedding", index_type=index_type, metric_type="IP", params=params
        )
        properties = {SPEC_PROPERTY: json.dumps(dict(spec), sort_keys=True),
                      PARTITION_PROPERTY: settings.partition_by,
                      INDEX_PROPERTY: json.dumps({"index_type": index_type, "params": params},
                                                 sort_keys=True)}
        if dba is not None:
            schema.add_field(RAW_FIELD, DataType.FLOAT_VECTOR, dim=dim)
            # Exact neighbours: DBA must not depend on what an approximate index happens to find.
            indexes.add_index(
                field_name=RAW_FIELD, index_type="FLAT", metric_type="IP", params={}
            )
            properties[DBA_PROPERTY] = dba.to_json()
        # Given at creation: Milvus 2.3 forgets properties altered later when it restarts. Reads
        # that decide writes (which ids exist) stay Strong; searches use settings.consistency.
        client.create_collection(
            physical, schema=schema, index_params=indexes, consistency_level="Strong",
            properties=properties,
        )
        if partitioned:
            companions.create_routes(client, physical, dim)

    def existing_ids(self, ids: Sequence[int]) -> set[int]:
        if not ids:
            return set()
        rows = self._call(
            "query", self.name, filter=f"id in {[int(i) for i in ids]}", output_fields=["id"]
        )
        return {int(row["id"]) for row in rows}

    def insert(self, records: Sequence[ImageRecord]) -> None:
        """Store `records`; where the collection keeps raw descriptors, raw = embedding.

        Companions are written first (codes by upsert, so a retried insert leaves one each);
        category routes are running sums, so a retry after a failed main insert counts those
        images twice in their category's mean until `rebuild_routes`.
        """
        if not records:
            return
        layout = self.layout()
        with_raw = layout.raw
        vectors = np.asarray([r.embedding for r in records], dtype=np.float32)
        ids = [r.meta.id for r in records]
        # Checked before anything is written: a record without a category stores nothing.
        categories = ([_category(r, layout.partition_by) for r in records]
                      if layout.partitioned else [])
        if layout.hash is not None:
            self._write_codes(layout.physical, self._require_encoder(layout.hash),
                              layout.hash.floats, ids, vectors)
        if layout.partitioned:
            self._companion("add_to_routes", layout.physical, categories, vectors)
        rows = []
        for i, (record, vector) in enumerate(zip(records, vectors, strict=True)):
            row = _row(record.meta, vector)
            if layout.partitioned:
                row[CATEGORY_FIELD] = categories[i]
            if with_raw:
                row[RAW_FIELD] = row["embedding"]
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
        params: SearchParams | None = None,
    ) -> list[list[SearchHit]]:
        metas: dict[int, ImageMeta] = {}
        ranked = self._search(vectors, top_k, filter_expr, exclude_ids, min_score, params, metas)
        wanted = sorted({s.id for per_query in ranked for s in per_query} - set(metas))
        metas.update((m.id, m) for m in self.get(wanted) if m is not None)
        # A hit deleted between the search and the metadata read just drops out.
        return [
            [SearchHit(image=metas[s.id], score=s.score) for s in per_query if s.id in metas]
            for per_query in ranked
        ]

    def search_ids(
        self,
        vectors: NDArray[np.float32],
        top_k: int,
        filter_expr: str = "",
        exclude_ids: Sequence[int] = (),
        min_score: float | None = None,
        params: SearchParams | None = None,
    ) -> list[list[ScoredId]]:
        return self._search(vectors, top_k, filter_expr, exclude_ids, min_score, params)

    def _search(
        self,
        vectors: NDArray[np.float32],
        top_k: int,
        filter_expr: str,
        exclude_ids: Sequence[int],
        min_score: float | None,
        params: SearchParams | None,
        metas: dict[int, ImageMeta] | None = None,
    ) -> list[list[ScoredId]]:
        """Ranked ids and scores per query; where the float index answers directly, the hits'
        metadata comes with them into `metas` (when given), sparing a second read."""
        check_min_score(min_score)
        if not 1 <= top_k <= MAX_TOP_K:
            raise InvalidArgument(f"top_k must be between 1 and {MAX_TOP_K}, got {top_k}")
        if vectors.ndim != 2 or len(vectors) == 0:
            raise InvalidArgument(f"expected an N x D array of query vectors, got {vectors.shape}")
        queries = np.asarray(vectors, dtype=np.float32)
        layout = self.layout()
        search = resolve(self._settings, params, layout.index_type)
        clauses = [f"({filter_expr})"] if filter_expr.strip() else []
        if exclude_ids:
            clauses.append(f"id not in {[int(i) for i in exclude_ids]}")
        limit = min(top_k * search.rerank_factor, MAX_TOP_K)
        match search.mode:
            case "hash_rerank":
                if layout.hash is None:
                    raise ConfigError(
                        f"collection {self.name!r} keeps no hash codes: run `lookalike hash` "
                        "first (server only), or search in another mode"
                    )
                codes = self._require_encoder(layout.hash).encode(queries)
                if layout.hash.floats and not filter_expr.strip():
                    # The candidates come with their vectors: one round trip to Milvus.
                    found = self._companion(
                        "search_codes_with_floats", layout.physical, codes, limit,
                        search.hash_nprobe, self._settings.consistency, queries.shape[1],
                        exclude_ids,
                    )
                    return [best_of(query, ids, vectors, top_k, min_score)
                            for query, (ids, vectors) in zip(queries, found, strict=True)]
                candidates = self._companion(
                    "search_codes", layout.physical, codes, limit, search.hash_nprobe,
                    self._settings.consistency,
                )
                return self._rescored(queries, candidates, top_k, clauses, min_score, filter_expr)
            case "routed":
                if not layout.partitioned:
                    raise ConfigError(
                        f"collection {self.name!r} has no category partitions: create it with "
                        "LOOKALIKE_MILVUS__PARTITION_BY=label (or predicted) for routed search"
                    )
                routes = self._companion(
                    "nearest_categories", layout.physical, queries, search.route_top_n,
                    self._settings.consistency,
                )
                # Queries routed to the same categories share one search (one filter each).
                groups: dict[tuple[str, ...], list[int]] = {}
                for i, route in enumerate(routes):
                    groups.setdefault(tuple(sorted(route)), []).append(i)
                ranked: list[list[ScoredId]] = [[] for _ in range(len(queries))]
                for route, members in groups.items():
                    answers = self._float_search(
                        queries[members], top_k, limit,
                        [*clauses, companions.category_filter(route)] if route else clauses,
                        min_score, filter_expr, layout, search, metas,
                    )
                    for i, answer in zip(members, answers, strict=True):
                        ranked[i] = answer
                return ranked
        return self._float_search(
            queries, top_k, limit, clauses, min_score, filter_expr, layout, search, metas
        )

    def _float_search(
        self, queries: NDArray[np.float32], top_k: int, limit: int, clauses: list[str],
        min_score: float | None, filter_expr: str, layout: Layout, search: ResolvedSearch,
        metas: dict[int, ImageMeta] | None = None,
    ) -> list[list[ScoredId]]:
        """The float index's top `limit`, re-scored exactly down to `top_k` when limit > top_k."""
        from pymilvus.exceptions import MilvusException

        direct = limit == top_k
        # Re-scored candidates come with their vectors: one round trip, not a search and a get.
        fields = (["id", "embedding"] if not direct
                  else list(META_FIELDS) if metas is not None else ["id"])
        try:
            results = self._client.search(
                self.name, data=queries.tolist(), limit=limit, filter=" and ".join(clauses),
                output_fields=fields, anns_field="embedding",
                consistency_level=self._settings.consistency,
                search_params=float_search_params(layout.index_type, search, limit, min_score),
            )
        except MilvusException as exc:
            raise _refused(exc.message, filter_expr, f"search in {self.name!r}") from exc
        except Exception as exc:
            raise StoreUnavailable(f"search in {self.name!r} failed: {exc}") from exc
        if direct:
            if metas is not None:
                metas.update((int(h["id"]), _meta_from_entity(h["entity"] | {"id": h["id"]}))
                             for per_query in results for h in per_query)
            return [[ScoredId(id=int(h["id"]), score=float(h["distance"])) for h in per_query]
                    for per_query in results]
        found = ids_and_vectors(results, "embedding", queries.shape[1])
        return [best_of(query, *first_of_each(ids, vectors), top_k, min_score)
                for query, (ids, vectors) in zip(queries, found, strict=True)]

    def _rescored(
        self, queries: NDArray[np.float32], candidates: list[list[int]], top_k: int,
        clauses: list[str], min_score: float | None, filter_expr: str,
    ) -> list[list[ScoredId]]:
        """Each query's candidates scored exactly with their stored vectors, best `top_k`;
        `clauses` (filter, exclusions) are applied to the candidates here."""
        vectors = self._vectors_where(sorted({i for c in candidates for i in c}), clauses,
                                      filter_expr)
        out: list[list[ScoredId]] = []
        for query, ids in zip(queries, candidates, strict=True):
            kept = [i for i in dict.fromkeys(ids) if i in vectors]
            out.append(best_of(query, kept, np.stack([vectors[i] for i in kept]) if kept
                               else np.empty((0, len(query)), dtype=np.float32),
                               top_k, min_score))
        return out

    def _vectors_where(
        self, ids: list[int], clauses: list[str], filter_expr: str
    ) -> dict[int, NDArray[np.float32]]:
        """Stored embeddings of those of `ids` that match `clauses`, by id."""
        from pymilvus.exceptions import MilvusException

        found: dict[int, NDArray[np.float32]] = {}
        for start in range(0, len(ids), MAX_TOP_K):
            chunk = ids[start:start + MAX_TOP_K]
            try:
                # By primary key where nothing else narrows them: no scan of the other rows.
                # strict_float32: the vectors come as views of one float32 array, not as lists
                # of Python floats, which cost most of a re-ranked search's time.
                rows = (self._client.get(self.name, ids=chunk, output_fields=["id", "embedding"],
                                         consistency_level=self._settings.consistency,
                                         strict_float32=True)
                        if not clauses else
                        self._client.query(self.name,
                                           filter=" and ".join([f"id in {chunk}", *clauses]),
                                           output_fields=["id", "embedding"], limit=len(chunk),
                                           consistency_level=self._settings.consistency,
                                           strict_float32=True))
            except MilvusException as exc:
                raise _refused(exc.message, filter_expr, f"query in {self.name!r}") from exc
            except Exception as exc:
                raise StoreUnavailable(f"query in {self.name!r} failed: {exc}") from exc
            found.update((int(r["id"]), np.asarray(r["embedding"], dtype=np.float32))
                         for r in rows)
        return found

    def ids_matching(self, filter_expr: str, limit: int = MAX_TOP_K) -> list[int]:
        if not filter_expr.strip():
            raise InvalidArgument("a filter expression is required (refusing to match everything)")
        from pymilvus.exceptions import MilvusException

        try:
            rows = self._client.query(
                self.name, filter=filter_expr, output_fields=["id"], limit=limit
            )
        except MilvusException as exc:
            raise _refused(exc.message, filter_expr, f"query in {self.name!r}") from exc
        except Exception as exc:
            raise StoreUnavailable(f"query in {self.name!r} failed: {exc}") from exc
        return [int(row["id"]) for row in rows]

    def page(self, filter_expr: str, offset: int, limit: int) -> list[ImageMeta]:
        """Stored images matching `filter_expr` in id order: `limit` after the first `offset`.

        A plain query with offset and limit comes back in id order from a Milvus server but in
        no set order from Milvus Lite, so its pages would overlap and miss rows. The query
        iterator pages by primary key on both: ids are read through it up to offset + limit,
        then the page's metadata by id.
        """
        if offset < 0 or limit < 1:
            raise InvalidArgument(f"offset must be >= 0 and limit >= 1, got {offset} and {limit}")
        if offset + limit > MAX_TOP_K:
            raise InvalidArgument(
                f"offset + limit must be at most {MAX_TOP_K}, got {offset + limit}: "
                "narrow the listing with a filter instead"
            )
        end = offset + limit
        ids: list[int] = []
        with contextlib.closing(self._iterate(["id"], filter_expr, end)) as batches:
            for rows in batches:
                ids.extend(int(row["id"]) for row in rows)
                if len(ids) >= end:
                    break
        wanted = sorted(ids)[offset:end]
        return [m for m in self.get(wanted) if m is not None]

    def count_matching(self, filter_expr: str) -> int:
        return int(self._query(filter_expr, ["count(*)"])[0]["count(*)"])

    def label_counts(self, filter_expr: str = "") -> dict[str, int]:
        """Images per label among those matching `filter_expr`, without reading every row
        where labels are few: each distinct label is found by a one-row query and counted with
        count(*); past MAX_PROBED_LABELS of them, the rest are counted from their label field."""
        scope = [f"({filter_expr})"] if filter_expr.strip() else []
        counts: dict[str, int] = {}
        while True:
            others = scope + ([f"label not in [{', '.join(quote(x) for x in counts)}]"]
                              if counts else [])
            if len(counts) >= MAX_PROBED_LABELS:
                for rows in self._iterate(["label"], " and ".join(others), 4096):
                    for row in rows:
                        counts[str(row["label"])] = counts.get(str(row["label"]), 0) + 1
                break
            found = self._query(" and ".join(others), ["label"], limit=1)
            if not found:
                break
            label = str(found[0]["label"])
            counts[label] = self.count_matching(" and ".join([*scope, f"label == {quote(label)}"]))
        # A label whose images were deleted between the two queries counts none.
        return {label: n for label, n in counts.items() if n}

    def _query(self, filter_expr: str, fields: list[str], **kwargs: Any) -> list[Mapping[str, Any]]:
        """Rows of a query, with a refusal blamed on the filter where there is one."""
        from pymilvus.exceptions import MilvusException

        try:
            return list(self._client.query(self.name, filter=filter_expr, output_fields=fields,
                                           **kwargs))
        except MilvusException as exc:
            raise _refused(exc.message, filter_expr, f"query in {self.name!r}") from exc
        except Exception as exc:
            raise StoreUnavailable(f"query in {self.name!r} failed: {exc}") from exc

    def delete(self, ids: Sequence[int]) -> int:
        """Delete codes, then vectors; take them out of their categories' means."""
        layout = self.layout()
        present = self.existing_ids(ids)
        if not present:
            return 0
        wanted = sorted(present)
        routed = []
        if layout.partitioned:
            routed = list(self._call("get", self.name, ids=wanted,
                                     output_fields=["id", CATEGORY_FIELD, "embedding"]))
        # Codes first: a hash_rerank search that reads vectors from the codes collection
        # never answers with an image whose row is gone (a failed delete is retried whole).
        if layout.hash is not None:
            self._companion("delete_codes", layout.physical, wanted)
        self._call("delete", self.name, ids=wanted)
        if routed:
            self._companion(
                "add_to_routes", layout.physical, [str(r[CATEGORY_FIELD]) for r in routed],
                np.asarray([r["embedding"] for r in routed], dtype=np.float32), -1,
            )
        return len(present)

    def describe(self) -> CollectionInfo:
        layout = self.layout(refresh=True)
        return CollectionInfo(
            name=self.name, physical_name=layout.physical, count=self.count(),
            index_type=layout.index_type, index_params=dict(layout.index_params),
            metric_type="IP", spec=self._stored_spec(self._client, layout.physical),
        )

    def count(self) -> int:
        rows = self._call("query", self.name, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def layout(self, refresh: bool = False) -> Layout:
        """What the live collection keeps; read again after LAYOUT_TTL_S, so that an alias swap
        (a re-index) is followed."""
        with self._layout_lock:
            layout = self._layout
            if refresh or layout is None or time.monotonic() - layout.read_at > LAYOUT_TTL_S:
                layout = self._layout = self._read_layout()
            return layout

    def _read_layout(self) -> Layout:
        physical = self.live_collection()
        description = self._call("describe_collection", physical)
        properties = description.get("properties", {})
        try:
            index_type, params = read_index(self._client, physical, self._settings,
                                            embedding_dim(description))
        except Exception as exc:
            raise StoreUnavailable(f"cannot read the index of {physical!r}: {exc}") from exc
        codes = companions.codes_name(physical)
        recorded = (self._call("describe_collection", codes).get("properties", {}).get(HASH_PROPERTY)
                    if self._call("has_collection", codes) else None)
        return Layout(
            physical=physical, index_type=index_type, index_params=params,
            partition_by=partition_of(description),
            raw=_has_raw(description),
            hash=HashInfo.from_json(recorded) if recorded else None,
            spec=dict(json.loads(properties[SPEC_PROPERTY])) if SPEC_PROPERTY in properties else {},
            read_at=time.monotonic(),
        )

    def seal(self, timeout_s: float = 600.0, *, strict: bool = True) -> bool:
        """Flush what was written and wait until the indexes cover it; whether they do.

        Milvus (Lite and server) indexes sealed segments only: until a flush, newly written
        rows sit in growing segments that every search scans exactly (on Milvus Lite, 1,000
        fresh rows made a top-10 search take ~80 ms instead of ~5 ms). Past `timeout_s` the
        index keeps building in the background: StoreUnavailable when `strict`, else False.
        """
        layout = self.layout(refresh=True)
        wanted = [(layout.physical, "embedding")]
        if layout.hash is not None:
            wanted.append((companions.codes_name(layout.physical), "code"))
        deadline = time.monotonic() + timeout_s
        for collection, field in wanted:
            self._call("flush", collection)
            if not self._wait_indexed(collection, field, deadline, strict):
                return False
        return True

    def _wait_indexed(self, collection: str, field: str, deadline: float,
                      strict: bool = True) -> bool:
        """Wait until the index on `field` covers every row, until `deadline` (monotonic)."""
        while True:
            index = self._call("describe_index", collection, field) or {}
            if index.get("state") == "Finished" and not int(index.get("pending_index_rows", 0)):
                return True
            if time.monotonic() > deadline:
                if not strict:
                    return False
                raise StoreUnavailable(f"the index of {collection!r} was not built in time: {index}")
            time.sleep(0.5)

    def rebuild_index(
        self, index_type: str = "", params: Mapping[str, str] | None = None,
        timeout_s: float = 600.0,
    ) -> Layout:
        """Build the live collection's float index afresh: `index_type` (empty: the settings')
        with `params` (Milvus names: M, efConstruction, nlist, m, nbits) over the settings'.

        Flush, release, drop the index, create the new one, wait for it (at most `timeout_s`),
        load: searches fail in between. Where the new index is not built in time the old one
        is built again, in the background. Returns the layout read afterwards (searches use
        its index type and parameters from then on).
        """
        physical = self.live_collection()
        kind, build = rebuild_params(self._settings, self._dim_of(physical), index_type,
                                     params or {})
        before = self.layout(refresh=True)
        self._call("flush", physical)
        self._call("release_collection", physical)
        try:
            self._build_index(physical, kind, build)
            self._wait_indexed(physical, "embedding", time.monotonic() + timeout_s)
        except Exception:
            with contextlib.suppress(Exception):
                self._build_index(physical, before.index_type,
                                  {k: _number(v) for k, v in before.index_params.items()})
            with contextlib.suppress(Exception):
                self._client.load_collection(physical)
            self.layout(refresh=True)
            raise
        self._call("load_collection", physical)
        return self.layout(refresh=True)

    def _build_index(self, physical: str, kind: str, build: Mapping[str, Any]) -> None:
        """Replace the (released) collection's float index with `kind` built with `build`; the
        build runs in the background (pymilvus would otherwise wait for it without a bound)."""
        if "embedding" in self._call("list_indexes", physical, field_name="embedding"):
            self._call("drop_index", physical, "embedding")
        indexes = self._client.prepare_index_params()
        indexes.add_index(field_name="embedding", index_name="embedding", index_type=kind,
                          metric_type="IP", params=dict(build))
        self._call("create_index", physical, indexes, sync=False)
        self._call("alter_collection_properties", physical, properties={
            INDEX_PROPERTY: json.dumps({"index_type": kind, "params": dict(build)},
                                       sort_keys=True),
        })

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

    def _require_encoder(self, info: HashInfo) -> CodeEncoder:
        encoder = self._encoder
        if encoder is None or encoder.id != info.encoder_id:
            raise ConfigError(
                f"collection {self.name!r} keeps hash codes of {info.encoder_id}, but that hash "
                "is not loaded here; open the collection through lookalike.compose"
            )
        return encoder

    def build_codes(self, encoder: CodeEncoder, batch_size: int = 1000) -> int:
        """(Re)compute every stored image's code with `encoder` into a new codes collection and
        record it; searches in hash_rerank mode use it from then on. Server only."""
        check_supported(self._settings, "binary hash codes (BINARY_VECTOR)")
        physical = self.live_collection()
        dim = self._dim_of(physical)
        floats = self._settings.hash_floats and companions.can_keep_floats(dim)
        try:
            companions.create_codes(
                self._client, physical, encoder.bits, self._settings.hash_nlist,
                {HASH_PROPERTY: HashInfo(encoder.id, encoder.bits, floats).to_json()},
                dim if floats else 0,
            )
        except Exception as exc:
            raise StoreUnavailable(f"cannot create the codes of {physical!r}: {exc}") from exc
        self._encoder = encoder
        written = 0
        for ids, (vectors,) in self.iter_vectors(("embedding",), batch_size):
            self._write_codes(physical, encoder, floats, ids, vectors)
            written += len(ids)
        self.layout(refresh=True)
        return written

    def rebuild_routes(self, batch_size: int = 1000) -> int:
        """Recompute every category's mean from the stored vectors; how many categories."""
        layout = self.layout(refresh=True)
        if not layout.partitioned:
            raise ConfigError(f"collection {self.name!r} has no category partitions")
        sums: dict[str, tuple[NDArray[np.float64], int]] = {}
        for rows in self._iterate(["id", CATEGORY_FIELD, "embedding"], "", batch_size):
            batch = companions.category_sums(
                [str(r[CATEGORY_FIELD]) for r in rows],
                np.asarray([r["embedding"] for r in rows], dtype=np.float32),
            )
            for category, (total, count) in batch.items():
                old_total, old_count = sums.get(category, (np.zeros_like(total), 0))
                sums[category] = (old_total + total, old_count + count)
        name = companions.routes_name(layout.physical)
        try:
            companions.create_routes(self._client, layout.physical,
                                     int(self._stored_spec(self._client, layout.physical)
                                         .get("dim", 0)) or self._dim_of(layout.physical))
        except Exception as exc:
            raise StoreUnavailable(f"cannot rebuild the routes of {layout.physical!r}: {exc}") from exc
        rows = [
            {"category": c, "count": n, "norm": float(np.linalg.norm(t)),
             "direction": (t / np.linalg.norm(t)).astype(np.float32).tolist()}
            for c, (t, n) in sums.items() if np.linalg.norm(t) > 0
        ]
        for start in range(0, len(rows), 1000):
            self._call("upsert", name, data=rows[start:start + 1000])
        return len(rows)

    def _dim_of(self, physical: str) -> int:
        dim = embedding_dim(self._call("describe_collection", physical))
        if not dim:
            raise StoreUnavailable(f"collection {physical!r} has no embedding field")
        return dim

    def _write_codes(self, physical: str, encoder: CodeEncoder, floats: bool,
                     ids: Sequence[int], vectors: NDArray[np.float32]) -> None:
        """The codes of `vectors` into the codes collection, with the vectors themselves where
        it keeps them (`floats`)."""
        self._companion("write_codes", physical, ids, encoder.encode(vectors),
                        vectors if floats else None)

    def _companion(self, function: str, *args: Any) -> Any:
        try:
            return getattr(companions, function)(self._client, *args)
        except Exception as exc:
            raise StoreUnavailable(
                f"Milvus {function.replace('_', ' ')} of {self.name!r} failed: {exc}"
            ) from exc

    def ping(self) -> None:
        # A search of the served collection, not a listing: a restarted Milvus lists its
        # collections some 25 s before it searches them again, and answers queries before
        # searches (2.3.5); health must not say SERVING while searches still fail.
        probe = np.zeros((1, self._dim_of(self.name)), dtype=np.float32)
        probe[0, 0] = 1.0
        self.search_ids(probe, 1, params=SearchParams(mode="ann"))

    def live_collection(self) -> str:
        """The physical collection this store reads and writes now: the alias's target."""
        try:
            with contextlib.suppress(Exception):
                # One call where the server has it; the listing below costs one per collection.
                return str(self._client.describe_alias(self.name)["collection_name"])
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
        return self.layout().raw

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
        layout = self.layout()
        with_raw = layout.raw
        extra = [*([RAW_FIELD] if with_raw else []), *([CATEGORY_FIELD] if layout.partitioned else [])]
        by_id = {int(i): np.asarray(v, dtype=np.float32) for i, v in zip(ids, vectors, strict=True)}
        rows = []
        for row in self._get_rows(list(by_id), [*META_FIELDS, *extra]):
            new_row = _row(_meta_from_entity(row), by_id[int(row["id"])])
            for name in extra:
                new_row[name] = row[name]
            if with_raw:
                new_row[RAW_FIELD] = np.asarray(row[RAW_FIELD], dtype=np.float32).tolist()
            rows.append(new_row)
        if not rows:
            return 0
        if layout.hash is not None:
            updated = [int(r["id"]) for r in rows]
            self._write_codes(layout.physical, self._require_encoder(layout.hash),
                              layout.hash.floats, updated, np.stack([by_id[i] for i in updated]))
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
        category = [CATEGORY_FIELD] if self.layout().partitioned else []
        for rows in self._iterate([*META_FIELDS, *category, vector_field], "", batch_size):
            yield [
                ImageRecord(meta=_meta_from_entity(row),
                            embedding=np.asarray(row[vector_field], dtype=np.float32),
                            category=str(row.get(CATEGORY_FIELD, "")))
                for row in rows
            ]

    def _iterate(
        self, fields: list[str], filter_expr: str, batch_size: int
    ) -> Generator[list[Mapping[str, Any]], None, None]:
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
            # Companions left by an interrupted run describe rows that are gone.
            for companion in (companions.codes_name(physical), companions.routes_name(physical)):
                if self._client.has_collection(companion):
                    self._client.drop_collection(companion)
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
        # Milvus proxies before milvus-io/milvus#51779 (2026) key their shard-leader cache by
        # the alias name: a cache fill that raced the swap can put the old collection's shards
        # back under the alias, and searches through it then reach the old collection until the
        # entry ages out (seen on 2.3.5 under a concurrent search loop). The same swap again a
        # moment later invalidates that entry once more; fills after the first one are right.
        if not is_lite(self._settings):  # one process, no proxy cache
            time.sleep(ALIAS_SETTLE_S)
            self._call("alter_alias", physical, self.name)
        self.layout(refresh=True)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self._client, method)(*args, **kwargs)
        except Exception as exc:
            raise StoreUnavailable(f"Milvus {method} on {self.name!r} failed: {exc}") from exc
