"""Writing a served collection: inserts, embeddings replaced in place, deletes; every write
keeps the companion collections (hash codes, category routes) in step with the main one."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from lookalike.core.errors import InvalidArgument
from lookalike.core.milvus import companions
from lookalike.core.milvus.companions import CodeEncoder
from lookalike.core.milvus.connection import Served
from lookalike.core.milvus.errors import call_failed, companion_failed, milvus_errors
from lookalike.core.milvus.inspection import LayoutCache
from lookalike.core.milvus.layout import CATEGORY_FIELD, RAW_FIELD, require_encoder
from lookalike.core.milvus.reads import existing_ids, get_rows
from lookalike.core.milvus.rows import META_FIELDS, category_of, main_row, meta_from_entity
from lookalike.core.schemas import ImageRecord


def write_codes(served: Served, physical: str, encoder: CodeEncoder, floats: bool,
                ids: Sequence[int], vectors: NDArray[np.float32]) -> None:
    """The codes of `vectors` into the codes collection of `physical`, with the vectors
    themselves where it keeps them (`floats`)."""
    with milvus_errors(companion_failed("write codes", served.name)):
        companions.write_codes(served.client, physical, ids, encoder.encode(vectors),
                               vectors if floats else None)


def _add_to_routes(served: Served, physical: str, categories: Sequence[str],
                   vectors: NDArray[np.float32], sign: int = 1) -> None:
    with milvus_errors(companion_failed("add to routes", served.name)):
        companions.add_to_routes(served.client, physical, categories, vectors, sign)


def insert(served: Served, layouts: LayoutCache, encoder: CodeEncoder | None,
           records: Sequence[ImageRecord]) -> None:
    """Store `records`; where the collection keeps raw descriptors, raw = embedding.

    Companions are written first (codes by upsert, so a retried insert leaves one each);
    category routes are running sums, so a retry after a failed main insert counts those
    images twice in their category's mean until `rebuild_routes`.
    """
    if not records:
        return
    layout = layouts.get()
    vectors = np.asarray([r.embedding for r in records], dtype=np.float32)
    ids = [r.meta.id for r in records]
    # Checked before anything is written: a record without a category stores nothing.
    categories = ([category_of(r, layout.partition_by) for r in records]
                  if layout.partitioned else [])
    if layout.hash is not None:
        write_codes(served, layout.physical, require_encoder(served.name, encoder, layout.hash),
                    layout.hash.floats, ids, vectors)
    if layout.partitioned:
        _add_to_routes(served, layout.physical, categories, vectors)
    rows = []
    for i, (record, vector) in enumerate(zip(records, vectors, strict=True)):
        row = main_row(record.meta, vector)
        if layout.partitioned:
            row[CATEGORY_FIELD] = categories[i]
        if layout.raw:
            row[RAW_FIELD] = row["embedding"]
        rows.append(row)
    with milvus_errors(call_failed("insert", served.name)):
        served.client.insert(served.name, data=rows)


def upsert_embeddings(served: Served, layouts: LayoutCache, encoder: CodeEncoder | None,
                      ids: Sequence[int], vectors: NDArray[np.float32]) -> int:
    """Replace the embedding of the stored `ids` (whole rows are rewritten, metadata kept).

    Ids no longer stored are skipped rather than written back; returns how many were updated.
    """
    if len(ids) != len(vectors):
        raise InvalidArgument(f"{len(ids)} ids but {len(vectors)} vectors")
    layout = layouts.get()
    extra = [*([RAW_FIELD] if layout.raw else []),
             *([CATEGORY_FIELD] if layout.partitioned else [])]
    by_id = {int(i): np.asarray(v, dtype=np.float32) for i, v in zip(ids, vectors, strict=True)}
    rows = []
    for row in get_rows(served, list(by_id), [*META_FIELDS, *extra]):
        new_row = main_row(meta_from_entity(row), by_id[int(row["id"])])
        for name in extra:
            new_row[name] = row[name]
        if layout.raw:
            new_row[RAW_FIELD] = np.asarray(row[RAW_FIELD], dtype=np.float32).tolist()
        rows.append(new_row)
    if not rows:
        return 0
    if layout.hash is not None:
        updated = [int(r["id"]) for r in rows]
        write_codes(served, layout.physical, require_encoder(served.name, encoder, layout.hash),
                    layout.hash.floats, updated, np.stack([by_id[i] for i in updated]))
    with milvus_errors(call_failed("upsert", served.name)):
        served.client.upsert(served.name, data=rows)
    return len(rows)


def delete(served: Served, layouts: LayoutCache, ids: Sequence[int]) -> int:
    """Delete codes, then vectors; take them out of their categories' means. How many of
    `ids` were stored."""
    layout = layouts.get()
    present = existing_ids(served, ids)
    if not present:
        return 0
    wanted = sorted(present)
    routed = (get_rows(served, wanted, ["id", CATEGORY_FIELD, "embedding"])
              if layout.partitioned else [])
    # Codes first: a hash_rerank search that reads vectors from the codes collection
    # never answers with an image whose row is gone (a failed delete is retried whole).
    if layout.hash is not None:
        with milvus_errors(companion_failed("delete codes", served.name)):
            companions.delete_codes(served.client, layout.physical, wanted)
    with milvus_errors(call_failed("delete", served.name)):
        served.client.delete(served.name, ids=wanted)
    if routed:
        _add_to_routes(
            served, layout.physical, [str(r[CATEGORY_FIELD]) for r in routed],
            np.asarray([r["embedding"] for r in routed], dtype=np.float32), -1,
        )
    return len(present)
