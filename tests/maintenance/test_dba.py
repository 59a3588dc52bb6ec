"""Database-side augmentation in Milvus Lite matches the exact in-memory DBA and stays idempotent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lookalike import cli
from lookalike.app.compose import existing_store_from
from lookalike.core.errors import ConfigError
from lookalike.core.rerank import dba, top_k_exact
from lookalike.core.settings import MilvusSettings, Settings
from lookalike.core.vector_store import DbaParams, MilvusVectorStore
from lookalike.maintenance.dba import (
    apply_dba,
    apply_dba_all,
    dba_for,
    ids_ingested_since,
    unaugmented_ids,
)
from tests.core.milvus.records import DBA_SPEC as SPEC
from tests.core.milvus.records import DIM
from tests.core.milvus.records import distinct as records

K, ALPHA = 3, 3.0
PARAMS = DbaParams(K, ALPHA)


def _store(client: Any) -> MilvusVectorStore:
    return MilvusVectorStore.open(client, "images", SPEC, DIM, MilvusSettings(), dba=PARAMS)


def _embeddings(store: MilvusVectorStore, ids: list[int]) -> np.ndarray:
    vectors = store.get_vectors(ids)
    assert all(v is not None for v in vectors)
    return np.stack([v for v in vectors if v is not None])


def test_dba_equals_in_memory_dba_and_is_idempotent(client: Any) -> None:
    """Milvus DBA equals rerank.dba on the same raw vectors; again, it changes nothing."""
    store = _store(client)
    stored = records(40)
    store.insert(stored)
    ids = [r.meta.id for r in stored]
    raw = np.stack([r.embedding for r in stored])
    assert apply_dba(store, ids, K, ALPHA, batch_size=16) == 40
    expected = dba(raw, K, ALPHA)
    np.testing.assert_allclose(_embeddings(store, ids), expected, atol=1e-5)
    assert not np.allclose(expected, raw)
    assert store.get(ids) == [r.meta for r in stored]
    assert apply_dba_all(store, K, ALPHA, batch_size=7) == 40
    np.testing.assert_allclose(_embeddings(store, ids), expected, atol=1e-5)
    assert store.get(ids) == [r.meta for r in stored]
    hits = store.search(expected[:1], top_k=1)[0]
    assert hits[0].image == stored[0].meta


def test_new_images_update_their_neighbours(client: Any) -> None:
    """After a second batch, the new rows and their k nearest old rows equal the exact DBA."""
    store = _store(client)
    first, second = records(30, seed=0), records(10, seed=1)
    store.insert(first)
    apply_dba(store, [r.meta.id for r in first], K, ALPHA)
    before = _embeddings(store, [r.meta.id for r in first])
    store.insert(second)
    everything = first + second
    ids = [r.meta.id for r in everything]
    raw = np.stack([r.embedding for r in everything])
    new_rows = np.arange(30, 40)
    neighbours, _ = top_k_exact(raw[new_rows], raw, K + 1)
    touched = sorted(set(neighbours.ravel().tolist()) | set(new_rows.tolist()))
    assert apply_dba(store, [r.meta.id for r in second], K, ALPHA) == len(touched)
    after = _embeddings(store, ids)
    expected = dba(raw, K, ALPHA)
    np.testing.assert_allclose(after[touched], expected[touched], atol=1e-5)
    old_touched = [i for i in touched if i < 30]
    assert old_touched
    changed = [i for i in old_touched if not np.allclose(after[i], before[i], atol=1e-6)]
    # An old row changes exactly when a new image entered its own k nearest.
    exact_neighbours, _ = top_k_exact(raw, raw, K, exclude_self=True)
    assert changed == [i for i in old_touched if (exact_neighbours[i] >= 30).any()]
    untouched = [i for i in range(30) if i not in touched]
    np.testing.assert_array_equal(after[untouched], before[untouched])
    assert store.get(ids) == [r.meta for r in everything]


def test_pending_rows_and_ingest_times(client: Any) -> None:
    """Rows stored but never augmented are found, as are rows by their ingest time."""
    store = _store(client)
    first = records(12, seed=0)
    store.insert(first)
    apply_dba_all(store, K, ALPHA)
    later = records(3, seed=2)
    store.insert(later)
    assert unaugmented_ids(store) == [r.meta.id for r in later]
    assert ids_ingested_since(store, 110) == [first[10].meta.id, first[11].meta.id]


def test_dba_parameters_are_checked(client: Any) -> None:
    """The collection's recorded DBA rules; other settings or a collection without raw are refused."""
    store = _store(client)
    assert dba_for(store, None) == PARAMS
    assert dba_for(store, PARAMS) == PARAMS
    with pytest.raises(ConfigError, match=r"k=3, alpha=3.0.*lookalike dba --all"):
        dba_for(store, DbaParams(5, ALPHA))
    plain = MilvusVectorStore.open(client, "plain", SPEC, DIM, MilvusSettings())
    assert dba_for(plain, None) is None
    with pytest.raises(ConfigError, match=r"'plain' \(plain__\w+\) keeps no raw descriptors"):
        dba_for(plain, PARAMS)
    with pytest.raises(ConfigError, match="keeps no raw descriptors"):
        apply_dba(plain, [1], K, ALPHA)


def test_cli_ingest_applies_dba_and_dba_all_is_idempotent(
    tmp_path: Path, demo_dir: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`lookalike ingest` with dba_k augments the new images; `lookalike dba --all` changes nothing."""
    monkeypatch.setenv("LOOKALIKE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LOOKALIKE_MODEL__BACKBONE", "efficientnet_lite0")
    monkeypatch.setenv("LOOKALIKE_RETRIEVAL__DBA_K", "4")
    monkeypatch.setenv("LOOKALIKE_RETRIEVAL__DBA_ALPHA", "3.0")
    labels = sorted(p.name for p in demo_dir.iterdir())
    assert cli.main(["ingest", str(demo_dir / labels[0]), "--no-progress"]) == cli.EXIT_OK
    assert cli.main(["ingest", str(demo_dir), "--no-progress"]) == cli.EXIT_OK
    assert "DBA (k=4, alpha=3.0)" in capsys.readouterr().out
    store = existing_store_from(Settings())
    ids = [i for chunk in store.iter_ids() for i in chunk]
    raw = store.get_raw_vectors(ids)
    expected = dba(np.stack([v for v in raw if v is not None]), 4, 3.0)
    # Two ingests: rows the second did not reach may lag the exact DBA; --all makes it exact.
    assert cli.main(["dba", "--all"]) == cli.EXIT_OK
    exact = _embeddings(store, ids)
    np.testing.assert_allclose(exact, expected, atol=1e-5)
    assert cli.main(["dba", "--all"]) == cli.EXIT_OK
    # The weights are Milvus's scores, whose last bit can change once the first run's upserts
    # have moved the rows to other segments (seen: 3e-8 apart), so "nothing" is to float32 noise.
    np.testing.assert_allclose(_embeddings(store, ids), exact, rtol=1e-5, atol=1e-7)
    assert cli.main(["dba"]) == cli.EXIT_OK
    monkeypatch.setenv("LOOKALIKE_RETRIEVAL__DBA_K", "0")
    assert cli.main(["ingest", str(demo_dir), "--collection", "plain", "--no-progress"]) == 0
    monkeypatch.setenv("LOOKALIKE_RETRIEVAL__DBA_K", "4")
    capsys.readouterr()
    assert cli.main(["ingest", str(demo_dir), "--collection", "plain", "--no-progress"]) == 1
    assert "'plain' (plain__" in capsys.readouterr().err
