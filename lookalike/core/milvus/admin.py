"""Operator actions on the Milvus collections Lookalike created: list them, drop one.

A Lookalike collection is a physical collection that carries a stored model spec; its
companions (`<physical>__codes`, `<physical>__routes`) belong to it and are never listed on
their own. Dropping leaves the blobs alone: other model versions of the same images share them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lookalike.core.errors import InvalidArgument, NotFound
from lookalike.core.milvus import companions
from lookalike.core.milvus.errors import milvus_errors
from lookalike.core.milvus.inspection import collection_spec, read_index
from lookalike.core.milvus.layout import (
    DBA_PROPERTY,
    HASH_PROPERTY,
    DbaParams,
    HashInfo,
    embedding_dim,
    has_raw,
    partition_of,
)
from lookalike.core.milvus.lifecycle import open_collection

if TYPE_CHECKING:
    from lookalike.core.vector_store import MilvusVectorStore


@dataclass(frozen=True, slots=True)
class CollectionSummary:
    """A physical collection: the aliases naming it, its size, model and float index."""

    name: str
    aliases: tuple[str, ...]
    count: int
    spec: dict[str, Any]
    index_type: str
    index_params: dict[str, Any]
    serving: bool


@dataclass(frozen=True, slots=True)
class DropOutcome:
    """How many images the dropped collection held; whether an empty one now serves instead."""

    dropped_images: int
    recreated: bool


def _count(client: Any, collection: str) -> int:
    """Rows of a collection: count(*) where it is loaded, the segment statistics (which may
    still include deleted rows) where a query cannot run on it."""
    state = client.get_load_state(collection).get("state")
    if getattr(state, "name", state) == "Loaded":
        rows = client.query(collection, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])
    return int(client.get_collection_stats(collection).get("row_count", 0))


def _summary(store: MilvusVectorStore, collection: str, serving: str) -> CollectionSummary | None:
    client = store.client
    description = client.describe_collection(collection)
    spec = collection_spec(client, collection)
    if not spec:
        return None
    index_type, params = read_index(client, collection, store.settings,
                                    embedding_dim(description))
    return CollectionSummary(
        name=collection, aliases=tuple(sorted(client.list_aliases(collection).get("aliases", []))),
        count=_count(client, collection), spec=spec, index_type=index_type, index_params=params,
        serving=collection == serving,
    )


def list_collections(store: MilvusVectorStore) -> list[CollectionSummary]:
    """Every Lookalike collection on the store's Milvus, by name; `serving` marks the one
    behind the store's alias."""
    serving = store.live_collection()
    with milvus_errors("cannot list the collections"):
        names = sorted(str(n) for n in store.client.list_collections())
        found = [_summary(store, n, serving) for n in names if not companions.is_companion(n)]
    return [s for s in found if s is not None]


def drop_collection(store: MilvusVectorStore, name: str, confirm: str) -> DropOutcome:
    """Drop the physical collection `name` (`confirm` must repeat it), its companions and the
    aliases naming it.

    Where it is the one the store serves, an empty collection for the same model (with the
    same DBA and hash-code layout) takes its place under the store's alias, so that searches
    find nothing rather than fail.
    """
    if not name or confirm != name:
        raise InvalidArgument("dropping a collection needs its name repeated in confirm")
    client = store.client
    with milvus_errors(f"cannot read collection {name!r}"):
        exists = not companions.is_companion(name) and client.has_collection(name)
        spec = collection_spec(client, name) if exists else {}
    if not spec:
        raise NotFound(f"no Lookalike collection named {name!r} (see ListCollections)")
    serving = name == store.live_collection()
    with milvus_errors(f"cannot drop collection {name!r}"):
        description = client.describe_collection(name)
        dba_raw = description.get("properties", {}).get(DBA_PROPERTY)
        keeps_raw = has_raw(description)
        partition_by = partition_of(description)
        codes = companions.codes_name(name)
        hash_raw = (client.describe_collection(codes).get("properties", {}).get(HASH_PROPERTY)
                    if client.has_collection(codes) else None)
        count = _count(client, name)
        for alias in client.list_aliases(name).get("aliases", []):
            client.drop_alias(alias)
        for companion in (codes, companions.routes_name(name)):
            if client.has_collection(companion):
                client.drop_collection(companion)
        client.drop_collection(name)
    if serving:
        settings = store.settings.model_copy(
            update={"partition_by": partition_by})
        open_collection(
            client, store.name, spec, embedding_dim(description), settings, create=True,
            dba=DbaParams.from_json(dba_raw) if dba_raw and keeps_raw else None,
        )
        if hash_raw:
            info = HashInfo.from_json(hash_raw)
            fresh = store.live_collection()
            with milvus_errors(f"cannot recreate the codes of {name!r}"):
                companions.create_codes(client, fresh, info.bits,
                                        settings.hash_nlist, {HASH_PROPERTY: hash_raw},
                                        embedding_dim(description) if info.floats else 0)
        store.layout(refresh=True)
    return DropOutcome(dropped_images=count, recreated=serving)
