"""Companion collections kept beside a physical collection `<physical>`:

- `<physical>__codes`: each image's binary hash code (BINARY_VECTOR, BIN_IVF_FLAT / HAMMING),
  keyed by the image id. A separate collection rather than a second vector field because Milvus
  before 2.4 (the 2.3 standalone server among them) allows one vector field per collection.
  Optionally it also keeps a copy of each image's float descriptor (`floats`), so that one
  Hamming search returns the candidates with the vectors that re-score them: one round trip to
  Milvus instead of two (search, then fetch by id).
- `<physical>__routes`: one row per category: the running sum of its images' descriptors,
  stored as unit direction x norm, and its image count. A routed search asks it for the query's
  nearest categories (nearest class mean), then scans only their partitions.

Both are written by the vector store alongside the main collection; these functions only know
the Milvus calls.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from lookalike.core.filters import quote

CODES_SUFFIX = "__codes"
ROUTES_SUFFIX = "__routes"
MAX_CATEGORY_LEN = 512
FLOATS_FIELD = "floats"
MAX_VARCHAR_LEN = 65535
# Bytes of one gRPC answer with floats beyond which a search is split by queries; Milvus's
# proxy sends at most 512 MB by default.
MAX_ANSWER_BYTES = 64 << 20


class CodeEncoder(Protocol):
    """Turns L2-normalised descriptors into packed binary codes (ITQ, a learned hash layer)."""

    @property
    def id(self) -> str:
        """Identifies the encoder: the codes of two encoders never compare."""
        ...

    @property
    def bits(self) -> int:
        """Bits per code."""
        ...

    def encode(self, x: NDArray[np.float32]) -> NDArray[np.uint8]:
        """N x D descriptors -> N x bits/8 packed codes, in order."""
        ...


def codes_name(physical: str) -> str:
    """The codes collection beside `physical`."""
    return physical + CODES_SUFFIX


def routes_name(physical: str) -> str:
    """The routes collection beside `physical`."""
    return physical + ROUTES_SUFFIX


def is_companion(name: str) -> bool:
    """Whether `name` is a companion collection rather than one that holds images."""
    return name.endswith((CODES_SUFFIX, ROUTES_SUFFIX))


def floats_length(dim: int) -> int:
    """Characters of one `dim`-float descriptor as `encode_floats` writes it."""
    return 4 * -(-4 * dim // 3)


def can_keep_floats(dim: int) -> bool:
    """Whether a codes collection can keep `dim`-float descriptors (a VARCHAR's limit)."""
    return 0 < floats_length(dim) <= MAX_VARCHAR_LEN


def encode_floats(vector: NDArray[np.float32]) -> str:
    """One descriptor as text: its little-endian float32 bytes in base64.

    Milvus 2.3 has one vector field per collection and no bytes type. Of the scalar types, a
    VARCHAR decodes fastest: 100 queries x 100 hits of 256 floats came back in 369 ms as
    base64 text and in 787 ms as an ARRAY of FLOAT (`lookalike bench codes-floats`,
    docs/BENCHMARKS.md). The bytes are the float32 values themselves, so re-scoring with them
    is exact.
    """
    return base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode("ascii")


def decode_floats(text: str) -> NDArray[np.float32]:
    """The descriptor `encode_floats` wrote."""
    return np.frombuffer(base64.b64decode(text), dtype="<f4").astype(np.float32, copy=False)


def create_codes(
    client: Any, physical: str, bits: int, nlist: int, properties: dict[str, str],
    floats_dim: int = 0,
) -> str:
    """An empty, loaded codes collection beside `physical` (an old one is dropped first); its
    `properties` say which encoder made the codes. With `floats_dim`, it also keeps each
    image's descriptor of that many floats (see `can_keep_floats`)."""
    from pymilvus import DataType, MilvusClient

    if floats_dim and not can_keep_floats(floats_dim):
        raise ValueError(f"a codes collection cannot keep descriptors of {floats_dim} floats")
    name = codes_name(physical)
    if client.has_collection(name):
        client.drop_collection(name)
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("code", DataType.BINARY_VECTOR, dim=bits)
    if floats_dim:
        schema.add_field(FLOATS_FIELD, DataType.VARCHAR, max_length=floats_length(floats_dim))
    index = client.prepare_index_params()
    index.add_index(field_name="code", index_type="BIN_IVF_FLAT", metric_type="HAMMING",
                    params={"nlist": nlist})
    # Strong by default: the running sums and code writes read what was just written; searches
    # pass their own level.
    client.create_collection(name, schema=schema, index_params=index,
                             consistency_level="Strong", properties=properties)
    client.load_collection(name)
    return name


def write_codes(
    client: Any, physical: str, ids: Sequence[int], codes: NDArray[np.uint8],
    vectors: NDArray[np.float32] | None = None,
) -> None:
    """Store (or replace) the codes of `ids`, with their descriptors `vectors` where the
    collection keeps them; upsert, so a retried write leaves one row each."""
    if not len(ids):
        return
    rows: list[dict[str, Any]] = [
        {"id": int(i), "code": np.ascontiguousarray(c, dtype=np.uint8).tobytes()}
        for i, c in zip(ids, codes, strict=True)
    ]
    if vectors is not None:
        for row, vector in zip(rows, vectors, strict=True):
            row[FLOATS_FIELD] = encode_floats(vector)
    client.upsert(codes_name(physical), data=rows)


def delete_codes(client: Any, physical: str, ids: Sequence[int]) -> None:
    """Drop the codes of `ids` (absent ones are ignored)."""
    if ids:
        client.delete(codes_name(physical), ids=[int(i) for i in ids])


def search_codes(
    client: Any, physical: str, codes: NDArray[np.uint8], limit: int, nprobe: int,
    consistency: str,
) -> list[list[int]]:
    """Ids of the `limit` codes nearest in Hamming distance, per query code, best first."""
    results = _hamming_search(client, physical, codes, limit, nprobe, consistency, ["id"])
    return [[int(hit["id"]) for hit in per_query] for per_query in results]


def search_codes_with_floats(
    client: Any, physical: str, codes: NDArray[np.uint8], limit: int, nprobe: int,
    consistency: str, dim: int, exclude_ids: Sequence[int] = (),
) -> list[tuple[list[int], NDArray[np.float32]]]:
    """Per query code: the ids of the `limit` codes nearest in Hamming distance (best first,
    none of `exclude_ids`) and their descriptors (len(ids) x dim), from a codes collection that
    keeps them."""
    per_request = max(1, MAX_ANSWER_BYTES // (limit * floats_length(dim)))
    exclusion = f"id not in {[int(i) for i in exclude_ids]}" if exclude_ids else ""
    found: list[tuple[list[int], NDArray[np.float32]]] = []
    for start in range(0, len(codes), per_request):
        results = _hamming_search(client, physical, codes[start:start + per_request], limit,
                                  nprobe, consistency, [FLOATS_FIELD], exclusion)
        for per_query in results:
            ids = [int(hit["id"]) for hit in per_query]
            vectors = np.empty((len(ids), dim), dtype=np.float32)
            for row, hit in enumerate(per_query):
                vectors[row] = decode_floats(hit["entity"][FLOATS_FIELD])
            found.append((ids, vectors))
    return found


def _hamming_search(
    client: Any, physical: str, codes: NDArray[np.uint8], limit: int, nprobe: int,
    consistency: str, output_fields: list[str], filter_expr: str = "",
) -> Any:
    return client.search(
        codes_name(physical), data=[np.ascontiguousarray(c).tobytes() for c in codes],
        limit=limit, anns_field="code", output_fields=output_fields, filter=filter_expr,
        search_params={"metric_type": "HAMMING", "params": {"nprobe": nprobe}},
        consistency_level=consistency,
    )


def create_routes(client: Any, physical: str, dim: int) -> str:
    """An empty, loaded routes collection beside `physical` (an old one is dropped first)."""
    from pymilvus import DataType, MilvusClient

    name = routes_name(physical)
    if client.has_collection(name):
        client.drop_collection(name)
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("category", DataType.VARCHAR, is_primary=True, max_length=MAX_CATEGORY_LEN)
    schema.add_field("count", DataType.INT64)
    schema.add_field("norm", DataType.DOUBLE)
    schema.add_field("direction", DataType.FLOAT_VECTOR, dim=dim)
    index = client.prepare_index_params()
    index.add_index(field_name="direction", index_type="FLAT", metric_type="IP", params={})
    client.create_collection(name, schema=schema, index_params=index,
                             consistency_level="Strong")
    client.load_collection(name)
    return name


def category_sums(
    categories: Sequence[str], vectors: NDArray[np.float32]
) -> dict[str, tuple[NDArray[np.float64], int]]:
    """Per category: the sum of its vectors and how many there are."""
    sums: dict[str, tuple[NDArray[np.float64], int]] = {}
    for category, vector in zip(categories, vectors, strict=True):
        total, count = sums.get(category, (np.zeros(vectors.shape[1]), 0))
        sums[category] = (total + vector, count + 1)
    return sums


def add_to_routes(
    client: Any, physical: str, categories: Sequence[str], vectors: NDArray[np.float32],
    sign: int = 1,
) -> None:
    """Add (sign 1) or take out (sign -1) these images' descriptors from their categories'
    running sums; a category left with no image is dropped."""
    if not len(categories):
        return
    name = routes_name(physical)
    deltas = category_sums(categories, vectors)
    quoted = ", ".join(quote(c) for c in deltas)
    stored = {
        str(row["category"]): (np.asarray(row["direction"], dtype=np.float64) * float(row["norm"]),
                               int(row["count"]))
        for row in client.query(name, filter=f"category in [{quoted}]",
                                output_fields=["category", "count", "norm", "direction"])
    }
    rows, emptied = [], []
    for category, (delta, count) in deltas.items():
        total, stored_count = stored.get(category, (np.zeros_like(delta), 0))
        new_total, new_count = total + sign * delta, stored_count + sign * count
        norm = float(np.linalg.norm(new_total))
        if new_count <= 0 or norm == 0.0:
            emptied.append(category)
            continue
        rows.append({"category": category, "count": new_count, "norm": norm,
                     "direction": (new_total / norm).astype(np.float32).tolist()})
    if rows:
        client.upsert(name, data=rows)
    if emptied:
        client.delete(name, filter=f"category in [{', '.join(quote(c) for c in emptied)}]")


def nearest_categories(
    client: Any, physical: str, vectors: NDArray[np.float32], top_n: int, consistency: str
) -> list[list[str]]:
    """Each query's `top_n` categories by cosine to the category mean, best first."""
    results = client.search(
        routes_name(physical), data=np.asarray(vectors, dtype=np.float32).tolist(), limit=top_n,
        anns_field="direction", output_fields=["category"], search_params={"params": {}},
        consistency_level=consistency,
    )
    return [[str(hit["entity"]["category"]) for hit in per_query] for per_query in results]


def category_filter(categories: Sequence[str]) -> str:
    """A filter expression on the partition key selecting `categories`."""
    return f"category in [{', '.join(quote(c) for c in categories)}]"
