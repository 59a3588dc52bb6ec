"""`lookalike hash`: ITQ learned on a collection, stored in the blob store, codes written for
every image, and found again by a store opened later (real Milvus server)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lookalike.core.blob_store import open_blob_store
from lookalike.core.errors import ConfigError
from lookalike.core.milvus.vector_index import SearchParams
from lookalike.core.settings import BlobSettings, MilvusSettings
from lookalike.core.vector_store import MilvusVectorStore
from lookalike.maintenance.hash_codes import attach_hash, hash_collection, hash_key, load_hash
from tests.conftest import MilvusServer
from tests.core.milvus.test_server import DIM, SPEC, clustered, near_copies, records


@pytest.mark.milvus_server
def test_hash_collection_then_reopen_and_search(
    server_client: Any, milvus_server: MilvusServer, tmp_path: Path
) -> None:
    blobs = open_blob_store(str(tmp_path / "blobs"), BlobSettings())
    settings = milvus_server.settings(hash_nlist=8, hash_nprobe=8)
    store = MilvusVectorStore.open(server_client, "to_hash", SPEC, DIM, settings)
    x, labels = clustered()
    x, labels = x[:600], labels[:600]
    store.insert(records(x, labels))
    result = hash_collection(store, blobs, 64, max_samples=500)
    assert (result.samples, result.codes, result.itq.bits) == (500, 600, 64)
    assert blobs.exists(hash_key(result.itq.id))

    reopened = MilvusVectorStore.open(server_client, "to_hash", SPEC, DIM, settings)
    with pytest.raises(ConfigError, match="not loaded here"):
        reopened.search_ids(x[:1], 1, params=SearchParams(mode="hash_rerank"))
    attach_hash(reopened, blobs)
    picks = np.arange(0, 600, 37)
    hits = reopened.search_ids(near_copies(x, picks), 1, params=SearchParams(mode="hash_rerank"))
    assert [h[0].id for h in hits] == [int(i) + 1 for i in picks]


def test_hash_needs_a_server_and_its_artefact(client: Any, tmp_path: Path) -> None:
    blobs = open_blob_store(str(tmp_path / "blobs"), BlobSettings())
    store = MilvusVectorStore.open(client, "lite", SPEC, DIM, MilvusSettings())
    x, labels = clustered()
    store.insert(records(x[:300], labels[:300]))
    with pytest.raises(ConfigError, match="Milvus Lite cannot build binary"):
        hash_collection(store, blobs, 64)
    with pytest.raises(ConfigError, match=r"has no 'models/hashing/itq64-missing\.npz'"):
        load_hash(blobs, "itq64-missing")
    blobs.put(hash_key("itq64-bad"), b"not an npz", "application/octet-stream")
    with pytest.raises(ConfigError, match="is not a hash artefact"):
        load_hash(blobs, "itq64-bad")
