"""Reading a served collection: rows by id or by filter, pages in id order, every row in
batches, and counts (of all, of a filter, per label)."""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lookalike.core.errors import InvalidArgument
from lookalike.core.filters import quote
from lookalike.core.milvus.connection import Served
from lookalike.core.milvus.errors import call_failed, milvus_errors
from lookalike.core.milvus.layout import CATEGORY_FIELD, MAX_TOP_K, VectorField
from lookalike.core.milvus.rows import META_FIELDS, meta_from_entity
from lookalike.core.schemas import ImageMeta, ImageRecord

# Label counts find and count(*) up to this many distinct labels one by one; beyond, they read
# the label field of the remaining rows.
MAX_PROBED_LABELS = 64


def existing_ids(served: Served, ids: Sequence[int]) -> set[int]:
    """Which of `ids` are stored (one query for the whole batch)."""
    if not ids:
        return set()
    with milvus_errors(call_failed("query", served.name)):
        rows = served.client.query(served.name, filter=f"id in {[int(i) for i in ids]}",
                                   output_fields=["id"])
    return {int(row["id"]) for row in rows}


def get_rows(served: Served, ids: Sequence[int], fields: list[str]) -> list[Mapping[str, Any]]:
    """The `fields` of the stored rows among `ids`, in no set order."""
    if not ids:
        return []
    with milvus_errors(call_failed("get", served.name)):
        return list(served.client.get(served.name, ids=[int(i) for i in ids],
                                      output_fields=fields))


def get_metas(served: Served, ids: Sequence[int]) -> list[ImageMeta | None]:
    """Metadata per id, in order; None where the id is not stored."""
    found = {
        int(row["id"]): meta_from_entity(row)
        for row in get_rows(served, ids, list(META_FIELDS))
    }
    return [found.get(int(i)) for i in ids]


def get_vectors(
    served: Served, ids: Sequence[int], field: VectorField = "embedding"
) -> list[NDArray[np.float32] | None]:
    """Stored `field` vector per id, in order; None where the id is not stored."""
    found = {
        int(row["id"]): np.asarray(row[field], dtype=np.float32)
        for row in get_rows(served, ids, ["id", field])
    }
    return [found.get(int(i)) for i in ids]


def iterate(
    served: Served, fields: list[str], filter_expr: str, batch_size: int
) -> Generator[list[Mapping[str, Any]], None, None]:
    """The `fields` of every row matching `filter_expr` ("" for all), in batches, in id order."""
    failed = f"reading {served.name!r} failed"
    with milvus_errors(failed, filter_expr=filter_expr):
        iterator = served.client.query_iterator(
            served.name, batch_size=batch_size, filter=filter_expr, output_fields=fields
        )
    try:
        while True:
            with milvus_errors(failed):
                rows = iterator.next()
            if not rows:
                return
            yield list(rows)
    finally:
        iterator.close()


def iter_ids(served: Served, filter_expr: str, batch_size: int) -> Iterator[list[int]]:
    """Stored ids (those matching `filter_expr`, if given) in batches, in id order."""
    for rows in iterate(served, ["id"], filter_expr, batch_size):
        yield [int(row["id"]) for row in rows]


def iter_vectors(
    served: Served, fields: Sequence[VectorField], batch_size: int
) -> Iterator[tuple[list[int], list[NDArray[np.float32]]]]:
    """Every row's ids and one B x D matrix per vector field asked for, in batches."""
    for rows in iterate(served, ["id", *fields], "", batch_size):
        yield (
            [int(row["id"]) for row in rows],
            [np.asarray([row[f] for row in rows], dtype=np.float32) for f in fields],
        )


def iter_records(
    served: Served, partitioned: bool, vector_field: VectorField, batch_size: int
) -> Iterator[list[ImageRecord]]:
    """Every stored image with the vector of `vector_field` (and its category where rows are
    `partitioned`), in batches, in id order."""
    category = [CATEGORY_FIELD] if partitioned else []
    for rows in iterate(served, [*META_FIELDS, *category, vector_field], "", batch_size):
        yield [
            ImageRecord(meta=meta_from_entity(row),
                        embedding=np.asarray(row[vector_field], dtype=np.float32),
                        category=str(row.get(CATEGORY_FIELD, "")))
            for row in rows
        ]


def query(
    served: Served, filter_expr: str, fields: list[str], limit: int | None = None
) -> list[Mapping[str, Any]]:
    """Rows of a query (at most `limit`), with a refusal blamed on the filter where there is
    one."""
    bound = {} if limit is None else {"limit": limit}
    with milvus_errors(f"query in {served.name!r} failed", filter_expr=filter_expr):
        return list(served.client.query(served.name, filter=filter_expr, output_fields=fields,
                                        **bound))


def ids_matching(served: Served, filter_expr: str, limit: int) -> list[int]:
    """Ids of stored images that match a filter expression (at most `limit`)."""
    if not filter_expr.strip():
        raise InvalidArgument("a filter expression is required (refusing to match everything)")
    return [int(row["id"]) for row in query(served, filter_expr, ["id"], limit)]


def count(served: Served) -> int:
    """How many images are stored."""
    with milvus_errors(call_failed("query", served.name)):
        rows = served.client.query(served.name, filter="", output_fields=["count(*)"])
    return int(rows[0]["count(*)"])


def count_matching(served: Served, filter_expr: str) -> int:
    """How many stored images match `filter_expr` ("" for all)."""
    return int(query(served, filter_expr, ["count(*)"])[0]["count(*)"])


def page(served: Served, filter_expr: str, offset: int, limit: int) -> list[ImageMeta]:
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
    with contextlib.closing(iterate(served, ["id"], filter_expr, end)) as batches:
        for rows in batches:
            ids.extend(int(row["id"]) for row in rows)
            if len(ids) >= end:
                break
    wanted = sorted(ids)[offset:end]
    return [m for m in get_metas(served, wanted) if m is not None]


def label_counts(served: Served, filter_expr: str) -> dict[str, int]:
    """Images per label among those matching `filter_expr`, without reading every row
    where labels are few: each distinct label is found by a one-row query and counted with
    count(*); past MAX_PROBED_LABELS of them, the rest are counted from their label field."""
    scope = [f"({filter_expr})"] if filter_expr.strip() else []
    counts: dict[str, int] = {}
    while True:
        others = scope + ([f"label not in [{', '.join(quote(x) for x in counts)}]"]
                          if counts else [])
        if len(counts) >= MAX_PROBED_LABELS:
            for rows in iterate(served, ["label"], " and ".join(others), 4096):
                for row in rows:
                    counts[str(row["label"])] = counts.get(str(row["label"]), 0) + 1
            break
        found = query(served, " and ".join(others), ["label"], limit=1)
        if not found:
            break
        label = str(found[0]["label"])
        counts[label] = count_matching(served, " and ".join([*scope, f"label == {quote(label)}"]))
    # A label whose images were deleted between the two queries counts none.
    return {label: n for label, n in counts.items() if n}
