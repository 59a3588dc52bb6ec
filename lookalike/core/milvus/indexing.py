"""Building what searches use: written rows sealed into the index, the float index rebuilt,
hash codes and category routes recomputed from the stored vectors, and the DBA parameters
recorded with a collection."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lookalike.core.errors import ConfigError, StoreUnavailable
from lookalike.core.milvus import companions
from lookalike.core.milvus.companions import CodeEncoder
from lookalike.core.milvus.connection import Served
from lookalike.core.milvus.errors import call_failed, milvus_errors
from lookalike.core.milvus.inspection import (
    LayoutCache,
    collection_spec,
    dim_of,
    live_collection,
)
from lookalike.core.milvus.layout import (
    CATEGORY_FIELD,
    DBA_PROPERTY,
    HASH_PROPERTY,
    INDEX_PROPERTY,
    DbaParams,
    HashInfo,
    Layout,
    has_raw,
)
from lookalike.core.milvus.reads import iter_vectors, iterate
from lookalike.core.milvus.vector_index import check_supported, rebuild_params
from lookalike.core.milvus.writes import write_codes

ROUTES_BATCH = 1000


def seal(served: Served, layout: Layout, timeout_s: float, strict: bool) -> bool:
    """Flush what was written and wait until the indexes cover it; whether they do.

    Milvus (Lite and server) indexes sealed segments only: until a flush, newly written
    rows sit in growing segments that every search scans exactly (on Milvus Lite, 1,000
    fresh rows made a top-10 search take ~80 ms instead of ~5 ms). Past `timeout_s` the
    index keeps building in the background: StoreUnavailable when `strict`, else False.
    """
    wanted = [(layout.physical, "embedding")]
    if layout.hash is not None:
        wanted.append((companions.codes_name(layout.physical), "code"))
    deadline = time.monotonic() + timeout_s
    for collection, field in wanted:
        _flush(served, collection)
        if not wait_indexed(served, collection, field, deadline, strict):
            return False
    return True


def _flush(served: Served, collection: str) -> None:
    with milvus_errors(call_failed("flush", served.name)):
        served.client.flush(collection)


def wait_indexed(served: Served, collection: str, field: str, deadline: float,
                 strict: bool = True) -> bool:
    """Wait until the index on `field` covers every row, until `deadline` (monotonic)."""
    while True:
        with milvus_errors(call_failed("describe_index", served.name)):
            index = served.client.describe_index(collection, field) or {}
        if index.get("state") == "Finished" and not int(index.get("pending_index_rows", 0)):
            return True
        if time.monotonic() > deadline:
            if not strict:
                return False
            raise StoreUnavailable(f"the index of {collection!r} was not built in time: {index}")
        time.sleep(0.5)


def _number(value: Any) -> Any:
    """A build parameter as Milvus Lite reports or we recorded it ("16") back as a number."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def rebuild_index(served: Served, layouts: LayoutCache, index_type: str,
                  params: Mapping[str, str], timeout_s: float) -> Layout:
    """Build the live collection's float index afresh: `index_type` (empty: the settings')
    with `params` (Milvus names: M, efConstruction, nlist, m, nbits) over the settings'.

    Flush, release, drop the index, create the new one, wait for it (at most `timeout_s`),
    load: searches fail in between. Where the new index is not built in time the old one
    is built again, in the background. Returns the layout read afterwards (searches use
    its index type and parameters from then on).
    """
    physical = live_collection(served)
    kind, build = rebuild_params(served.settings, dim_of(served, physical), index_type, params)
    before = layouts.get(refresh=True)
    _flush(served, physical)
    with milvus_errors(call_failed("release_collection", served.name)):
        served.client.release_collection(physical)
    try:
        _build_index(served, physical, kind, build)
        wait_indexed(served, physical, "embedding", time.monotonic() + timeout_s)
    except Exception:
        with contextlib.suppress(Exception):
            _build_index(served, physical, before.index_type,
                         {k: _number(v) for k, v in before.index_params.items()})
        with contextlib.suppress(Exception):
            served.client.load_collection(physical)
        layouts.get(refresh=True)
        raise
    with milvus_errors(call_failed("load_collection", served.name)):
        served.client.load_collection(physical)
    return layouts.get(refresh=True)


def _build_index(served: Served, physical: str, kind: str, build: Mapping[str, Any]) -> None:
    """Replace the (released) collection's float index with `kind` built with `build`; the
    build runs in the background (pymilvus would otherwise wait for it without a bound)."""
    client = served.client
    with milvus_errors(call_failed("list_indexes", served.name)):
        present = client.list_indexes(physical, field_name="embedding")
    if "embedding" in present:
        with milvus_errors(call_failed("drop_index", served.name)):
            client.drop_index(physical, "embedding")
    indexes = client.prepare_index_params()
    indexes.add_index(field_name="embedding", index_name="embedding", index_type=kind,
                      metric_type="IP", params=dict(build))
    with milvus_errors(call_failed("create_index", served.name)):
        client.create_index(physical, indexes, sync=False)
    with milvus_errors(call_failed("alter_collection_properties", served.name)):
        client.alter_collection_properties(physical, properties={
            INDEX_PROPERTY: json.dumps({"index_type": kind, "params": dict(build)},
                                       sort_keys=True),
        })


def create_codes(served: Served, encoder: CodeEncoder) -> tuple[str, bool]:
    """A new, empty codes collection for `encoder` beside the live collection, recorded with
    it; the live collection and whether the codes keep the float vectors too. Server only."""
    check_supported(served.settings, "binary hash codes (BINARY_VECTOR)")
    physical = live_collection(served)
    dim = dim_of(served, physical)
    floats = served.settings.hash_floats and companions.can_keep_floats(dim)
    with milvus_errors(f"cannot create the codes of {physical!r}"):
        companions.create_codes(
            served.client, physical, encoder.bits, served.settings.hash_nlist,
            {HASH_PROPERTY: HashInfo(encoder.id, encoder.bits, floats).to_json()},
            dim if floats else 0,
        )
    return physical, floats


def fill_codes(served: Served, physical: str, encoder: CodeEncoder, floats: bool,
               batch_size: int) -> int:
    """Every stored image's code (and vector, with `floats`) into the codes collection of
    `physical`; how many were written."""
    written = 0
    for ids, (vectors,) in iter_vectors(served, ("embedding",), batch_size):
        write_codes(served, physical, encoder, floats, ids, vectors)
        written += len(ids)
    return written


def rebuild_routes(served: Served, layout: Layout, batch_size: int) -> int:
    """Recompute every category's mean from the stored vectors; how many categories."""
    if not layout.partitioned:
        raise ConfigError(f"collection {served.name!r} has no category partitions")
    sums: dict[str, tuple[NDArray[np.float64], int]] = {}
    for rows in iterate(served, ["id", CATEGORY_FIELD, "embedding"], "", batch_size):
        batch = companions.category_sums(
            [str(r[CATEGORY_FIELD]) for r in rows],
            np.asarray([r["embedding"] for r in rows], dtype=np.float32),
        )
        for category, (total, count) in batch.items():
            old_total, old_count = sums.get(category, (np.zeros_like(total), 0))
            sums[category] = (old_total + total, old_count + count)
    physical = layout.physical
    with milvus_errors(f"cannot rebuild the routes of {physical!r}"):
        companions.create_routes(
            served.client, physical,
            int(collection_spec(served.client, physical).get("dim", 0))
            or dim_of(served, physical),
        )
    rows = [
        {"category": c, "count": n, "norm": float(np.linalg.norm(t)),
         "direction": (t / np.linalg.norm(t)).astype(np.float32).tolist()}
        for c, (t, n) in sums.items() if np.linalg.norm(t) > 0
    ]
    name = companions.routes_name(physical)
    for start in range(0, len(rows), ROUTES_BATCH):
        with milvus_errors(call_failed("upsert", served.name)):
            served.client.upsert(name, data=rows[start:start + ROUTES_BATCH])
    return len(rows)


def dba_params(served: Served) -> DbaParams | None:
    """The DBA parameters recorded with the collection; None when it was created without."""
    with milvus_errors(call_failed("describe_collection", served.name)):
        description = served.client.describe_collection(served.name)
    recorded = description.get("properties", {}).get(DBA_PROPERTY)
    return DbaParams.from_json(recorded) if recorded and has_raw(description) else None


def record_dba_params(served: Served, params: DbaParams) -> None:
    """Record the DBA parameters the collection's embeddings were computed with (it must keep
    raw descriptors)."""
    physical = live_collection(served)
    with milvus_errors(call_failed("alter_collection_properties", served.name)):
        served.client.alter_collection_properties(
            physical, properties={DBA_PROPERTY: params.to_json()}
        )
