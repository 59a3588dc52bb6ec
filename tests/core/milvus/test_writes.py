"""Writing the Milvus store on Milvus Lite: embeddings replaced in place."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from lookalike.core.errors import InvalidArgument
from lookalike.core.settings import MilvusSettings
from lookalike.core.vector_store import MilvusVectorStore
from tests.core.milvus.records import DBA, DBA_SPEC, DIM, distinct


def test_upsert_embeddings_keeps_metadata_and_raw(client: Any) -> None:
    """Replacing embeddings rewrites rows whole: metadata and raw survive; gone ids stay gone."""
    store = MilvusVectorStore.open(client, "augmented", DBA_SPEC, DIM, MilvusSettings(), dba=DBA)
    stored = distinct(6)
    store.insert(stored)
    ids = [r.meta.id for r in stored[:3]] + [12345]
    new = np.eye(DIM, dtype=np.float32)[:4]
    assert store.upsert_embeddings(ids, new) == 3
    assert store.count() == 6
    assert store.get([r.meta.id for r in stored]) == [r.meta for r in stored]
    vectors = store.get_vectors(ids[:3])
    for vector, expected in zip(vectors, new[:3], strict=True):
        assert vector is not None
        np.testing.assert_array_equal(vector, expected)
    raw = store.get_raw_vectors(ids[:3])
    for vector, record in zip(raw, stored[:3], strict=True):
        assert vector is not None
        np.testing.assert_array_equal(vector, record.embedding)
    assert store.get([12345]) == [None]
    with pytest.raises(InvalidArgument):
        store.upsert_embeddings([1, 2], new[:1])
