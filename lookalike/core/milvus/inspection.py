"""What a Milvus collection is, read from the server: the physical collection behind an alias,
its stored model spec, its float index, and the layout a store keeps for a few seconds."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from lookalike.core.errors import StoreUnavailable
from lookalike.core.milvus.companions import codes_name
from lookalike.core.milvus.connection import Served
from lookalike.core.milvus.errors import call_failed, milvus_errors
from lookalike.core.milvus.layout import (
    HASH_PROPERTY,
    INDEX_PROPERTY,
    SPEC_PROPERTY,
    HashInfo,
    Layout,
    check_collection_name,
    embedding_dim,
    has_raw,
    partition_of,
)
from lookalike.core.milvus.vector_index import index_params
from lookalike.core.settings import MilvusSettings

# How long a store trusts what it read about its live collection (alias target, index, codes)
# before reading it again: an alias swap by a re-index is seen within this time.
LAYOUT_TTL_S = 5.0
_INDEX_INFO_KEYS = frozenset({
    "metric_type", "field_name", "index_name", "total_rows", "indexed_rows",
    "pending_index_rows", "state",
})


def resolve_alias(client: Any, name: str) -> str | None:
    """The physical collection the alias `name` points at; None when no collection has it."""
    for collection in client.list_collections():
        if name in client.list_aliases(collection).get("aliases", []):
            return str(collection)
    return None


def collection_spec(client: Any, collection: str) -> dict[str, Any]:
    """The model spec stored with a physical collection; {} for one Lookalike did not create."""
    properties = client.describe_collection(collection).get("properties", {})
    raw = properties.get(SPEC_PROPERTY)
    return dict(json.loads(raw)) if raw else {}


def live_collection_spec(client: Any, name: str) -> dict[str, Any] | None:
    """The model spec of the collection the alias `name` serves; None when there is none."""
    check_collection_name(name)
    with milvus_errors(f"cannot read collection {name!r}"):
        live = resolve_alias(client, name)
        return None if live is None else collection_spec(client, live)


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


def live_collection(served: Served) -> str:
    """The physical collection the store reads and writes now: the alias's target."""
    with contextlib.suppress(Exception):
        # One call where the server has it; the listing below costs one per collection.
        return str(served.client.describe_alias(served.name)["collection_name"])
    with milvus_errors(f"cannot resolve collection {served.name!r}"):
        return resolve_alias(served.client, served.name) or served.name


def stored_spec(served: Served) -> dict[str, Any]:
    """The model spec stored with the live collection."""
    physical = live_collection(served)
    with milvus_errors(f"cannot read the spec of {physical!r}"):
        return collection_spec(served.client, physical)


def dim_of(served: Served, collection: str) -> int:
    """The dimension of the `embedding` field of `collection` (an alias or physical name)."""
    with milvus_errors(call_failed("describe_collection", served.name)):
        dim = embedding_dim(served.client.describe_collection(collection))
    if not dim:
        raise StoreUnavailable(f"collection {collection!r} has no embedding field")
    return dim


def read_layout(served: Served) -> Layout:
    """What the live collection keeps, read now."""
    physical = live_collection(served)
    with milvus_errors(call_failed("describe_collection", served.name)):
        description = served.client.describe_collection(physical)
    properties = description.get("properties", {})
    with milvus_errors(f"cannot read the index of {physical!r}"):
        index_type, params = read_index(served.client, physical, served.settings,
                                        embedding_dim(description))
    codes = codes_name(physical)
    with milvus_errors(call_failed("has_collection", served.name)):
        keeps_codes = served.client.has_collection(codes)
    recorded = None
    if keeps_codes:
        with milvus_errors(call_failed("describe_collection", served.name)):
            recorded = (served.client.describe_collection(codes).get("properties", {})
                        .get(HASH_PROPERTY))
    return Layout(
        physical=physical, index_type=index_type, index_params=params,
        partition_by=partition_of(description),
        raw=has_raw(description),
        hash=HashInfo.from_json(recorded) if recorded else None,
        spec=dict(json.loads(properties[SPEC_PROPERTY])) if SPEC_PROPERTY in properties else {},
        read_at=time.monotonic(),
    )


class LayoutCache:
    """The last layout `read` returned, read again after LAYOUT_TTL_S (so that an alias swap by
    a re-index is followed) or when asked to; safe to share between threads."""

    def __init__(self, read: Callable[[], Layout]) -> None:
        self._read = read
        self._layout: Layout | None = None
        self._lock = threading.Lock()

    def get(self, refresh: bool = False) -> Layout:
        """The cached layout, or a fresh one when `refresh`, missing or stale."""
        with self._lock:
            layout = self._layout
            if refresh or layout is None or time.monotonic() - layout.read_at > LAYOUT_TTL_S:
                layout = self._layout = self._read()
            return layout
