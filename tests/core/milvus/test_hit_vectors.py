"""Reading the hits' vectors off pymilvus's own search result, a column at a time."""

from __future__ import annotations

import numpy as np
from pymilvus import DataType
from pymilvus.client.search_result import SearchResult
from pymilvus.grpc_gen import schema_pb2

from lookalike.core.milvus.hit_vectors import ids_and_vectors


def search_result(ids_per_query: list[list[int]], vectors: np.ndarray) -> SearchResult:
    """The result pymilvus builds from a server's answer: every query's hits in one column."""
    data = schema_pb2.SearchResultData(num_queries=len(ids_per_query), top_k=5,
                                       output_fields=["embedding"], primary_field_name="id")
    flat = [i for ids in ids_per_query for i in ids]
    data.ids.int_id.data.extend(flat)
    data.scores.extend([0.5] * len(flat))
    data.topks.extend([len(ids) for ids in ids_per_query])
    column = data.fields_data.add(type=DataType.FLOAT_VECTOR, field_name="embedding")
    column.vectors.dim = vectors.shape[1]
    column.vectors.float_vector.data.extend(vectors.ravel().tolist())
    return SearchResult(data)


def test_each_query_gets_its_own_hits_vectors_in_order() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(7, 4)).astype(np.float32)
    result = search_result([[11, 12, 13], [], [21, 22, 23, 24]], vectors)
    found = ids_and_vectors(result, "embedding", 4)
    assert not any(hits.has_materialized for hits in result)  # read off the column
    assert [ids for ids, _ in found] == [[11, 12, 13], [], [21, 22, 23, 24]]
    np.testing.assert_array_equal(found[0][1], vectors[:3])
    assert found[1][1].shape == (0, 4)
    np.testing.assert_array_equal(found[2][1], vectors[3:])
    # The same values as pymilvus's own hit-by-hit decoding (which the call did not need).
    by_hit = [np.asarray([h["entity"]["embedding"] for h in hits], dtype=np.float32)
              for hits in search_result([[11, 12, 13]], vectors[:3])]
    np.testing.assert_array_equal(found[0][1], by_hit[0])


def test_hits_in_another_shape_are_read_one_by_one() -> None:
    """Results without a shared column (another pymilvus, plain lists) give the same answer."""
    hits = [[{"id": 5, "entity": {"embedding": [1.0, 0.0]}},
             {"id": 6, "entity": {"embedding": [0.0, 1.0]}}], []]
    found = ids_and_vectors(hits, "embedding", 2)
    assert found[0][0] == [5, 6]
    np.testing.assert_array_equal(found[0][1], np.eye(2, dtype=np.float32))
    assert found[1][0] == []
    assert found[1][1].shape == (0, 2)
