"""Companion collections kept beside a physical collection `<physical>`:

- `<physical>__codes`: each image's binary hash code (BINARY_VECTOR, BIN_IVF_FLAT / HAMMING),
  keyed by the image id. A separate collection rather than a second vector field because Milvus
  before 2.4 (the 2.3 standalone server among them) allows one vector field per collection.
- `<physical>__routes`: one row per category: the running sum of its images' descriptors,
  stored as unit direction x norm, and its image count. A routed search asks it for the query's
  nearest categories (nearest class mean), then scans only their partitions.

Both are written by the vector store alongside the main collection; these functions only know
the Milvus calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

CODES_SUFFIX = "__codes"
ROUTES_SUFFIX = "__routes"
MAX_CATEGORY_LEN = 512


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


def create_codes(
    client: Any, physical: str, bits: int, nlist: int, properties: dict[str, str],
) -> str:
    """An empty, loaded codes collection beside `physical` (an old one is dropped first); its
    `properties` say which encoder made the codes."""
    from pymilvus import DataType, MilvusClient

    name = codes_name(physical)
    if client.has_collection(name):
        client.drop_collection(name)
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("code", DataType.BINARY_VECTOR, dim=bits)
    index = client.prepare_index_params()
    index.add_index(field_name="code", index_type="BIN_IVF_FLAT", metric_type="HAMMING",
                    params={"nlist": nlist})
    # Strong by default: the running sums and code writes read what was just written; searches
    # pass their own level.
    client.create_collection(name, schema=schema, index_params=index,
                             consistency_level="Strong", properties=properties)
    client.load_collection(name)
    return name


def write_codes(client: Any, physical: str, ids: Sequence[int], codes: NDArray[np.uint8]) -> None:
    """Store (or replace) the codes of `ids`; upsert, so a retried write leaves one row each."""
    if not len(ids):
        return
    client.upsert(codes_name(physical), data=[
        {"id": int(i), "code": np.ascontiguousarray(c, dtype=np.uint8).tobytes()}
        for i, c in zip(ids, codes, strict=True)
    ])


def delete_codes(client: Any, physical: str, ids: Sequence[int]) -> None:
    """Drop the codes of `ids` (absent ones are ignored)."""
    if ids:
        client.delete(codes_name(physical), ids=[int(i) for i in ids])


def search_codes(
    client: Any, physical: str, codes: NDArray[np.uint8], limit: int, nprobe: int,
    consistency: str,
) -> list[list[int]]:
    """Ids of the `limit` codes nearest in Hamming distance, per query code, best first."""
    results = client.search(
        codes_name(physical), data=[np.ascontiguousarray(c).tobytes() for c in codes],
        limit=limit, anns_field="code", output_fields=["id"],
        search_params={"metric_type": "HAMMING", "params": {"nprobe": nprobe}},
        consistency_level=consistency,
    )
    return [[int(hit["id"]) for hit in per_query] for per_query in results]


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
    quoted = ", ".join(_quote(c) for c in deltas)
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
        client.delete(name, filter=f"category in [{', '.join(_quote(c) for c in emptied)}]")


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
    return f"category in [{', '.join(_quote(c) for c in categories)}]"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
