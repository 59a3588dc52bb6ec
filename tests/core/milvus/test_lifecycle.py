"""Opening, creating and versioning collections, on Milvus Lite."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from lookalike.core.errors import ConfigError, InvalidArgument, ModelSpecMismatch
from lookalike.core.settings import MilvusSettings
from lookalike.core.vector_store import DbaParams, MilvusVectorStore, live_collection_spec, physical_name
from tests.core.milvus.records import DBA, DBA_SPEC, DIM, SPEC, distinct


def test_spec_is_checked_on_open(client: Any) -> None:
    """Opening a collection with another model's spec is refused, naming the difference."""
    MilvusVectorStore.open(client, "images", SPEC, DIM, MilvusSettings())
    again = MilvusVectorStore.open(client, "images", dict(SPEC), DIM, MilvusSettings())
    assert again.count() == 0
    with pytest.raises(ModelSpecMismatch, match="backbone: 'test' != 'other'"):
        MilvusVectorStore.open(client, "images", {**SPEC, "backbone": "other"}, DIM,
                               MilvusSettings())


def test_collection_names_are_validated(client: Any) -> None:
    """Names Milvus would refuse are rejected before reaching it."""
    for name in ("1abc", "a-b", "a__b", ""):
        with pytest.raises(ConfigError, match="invalid"):
            MilvusVectorStore.open(client, name, SPEC, DIM, MilvusSettings())
    with pytest.raises(ConfigError, match="does not exist"):
        MilvusVectorStore.open(client, "missing", SPEC, DIM, MilvusSettings(), create=False)


def test_lite_refuses_ivf_pq_rather_than_building_another_index(client: Any) -> None:
    with pytest.raises(ConfigError, match="Milvus Lite cannot build IVF_PQ"):
        MilvusVectorStore.open(client, "pq", SPEC, DIM, MilvusSettings(index_type="IVF_PQ"))
    assert client.list_collections() == []


def test_raw_field_only_with_dba(client: Any) -> None:
    """A DBA collection keeps raw = embedding on insert and records its parameters; others not."""
    plain = MilvusVectorStore.open(client, "plain", DBA_SPEC, DIM, MilvusSettings())
    assert not plain.has_raw()
    assert plain.dba_params() is None
    with pytest.raises(ConfigError, match=r"'plain' \(plain__\w+\) keeps no raw descriptors"):
        plain.get_raw_vectors([1])
    store = MilvusVectorStore.open(client, "augmented", DBA_SPEC, DIM, MilvusSettings(), dba=DBA)
    assert store.has_raw()
    assert store.dba_params() == DBA
    stored = distinct(5)
    store.insert(stored)
    raw = store.get_raw_vectors([r.meta.id for r in stored] + [999])
    assert raw[-1] is None
    for record, vector in zip(stored, raw[:-1], strict=True):
        assert vector is not None
        np.testing.assert_array_equal(vector, record.embedding)
    store.set_dba_params(DbaParams(k=5, alpha=1.0))
    assert store.dba_params() == DbaParams(k=5, alpha=1.0)


def test_versions_swap_atomically_and_the_old_one_stays(client: Any) -> None:
    """A new version is filled aside, then served under the alias; the old one is kept."""
    store = MilvusVectorStore.open(client, "images", DBA_SPEC, DIM, MilvusSettings())
    store.insert(distinct(4))
    old = store.live_collection()
    new_spec = {**DBA_SPEC, "whitening": "w1", "dim": 4}
    version = store.create_version(new_spec, 4)
    assert version.name == physical_name("images", new_spec)
    assert store.count() == 4
    version.insert(distinct(3, dim=4, seed=1))
    assert live_collection_spec(client, "images") == DBA_SPEC
    store.point_alias(version.name)
    assert store.live_collection() == version.name
    assert store.stored_spec() == new_spec
    assert live_collection_spec(client, "images") == new_spec
    assert store.count() == 3
    assert client.has_collection(old)
    with pytest.raises(ConfigError, match="already serves"):
        store.create_version(new_spec, 4)
    with pytest.raises(InvalidArgument):
        store.point_alias("other__abc")
    assert live_collection_spec(client, "missing") is None
    reopened = MilvusVectorStore.open(client, "images", new_spec, 4, MilvusSettings())
    assert reopened.count() == 3
    assert MilvusVectorStore.attach(client, "images", MilvusSettings()).stored_spec() == new_spec
    with pytest.raises(ConfigError, match="does not exist"):
        MilvusVectorStore.attach(client, "missing", MilvusSettings())


def test_an_interrupted_version_is_rebuilt(client: Any) -> None:
    """A version nothing serves (left by an interrupted run) is dropped and created empty."""
    store = MilvusVectorStore.open(client, "images", DBA_SPEC, DIM, MilvusSettings())
    new_spec = {**DBA_SPEC, "whitening": "w2"}
    store.create_version(new_spec, DIM).insert(distinct(2))
    again = store.create_version(new_spec, DIM, DBA)
    assert again.count() == 0
    assert again.has_raw()
