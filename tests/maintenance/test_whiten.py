"""`lookalike whiten` moves a collection to whitened vectors that whitened queries find."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lookalike import cli
from lookalike.app.compose import (
    blobs_from,
    collection_embedder_from,
    existing_store_from,
    pipeline_from,
    store_from,
    whitening_for,
)
from lookalike.core.blob_store import LocalBlobStore
from lookalike.core.errors import ConfigError
from lookalike.core.rerank import dba
from lookalike.core.settings import MilvusSettings, Settings
from lookalike.core.vector_store import DbaParams, MilvusVectorStore
from lookalike.embedder.runtime import Embedder
from lookalike.ingestion.sources import folder_items
from lookalike.maintenance.whiten import load_whitening, whiten_collection, whitening_key
from lookalike.services.client import LookalikeClient
from tests.conftest import encode, free_port, gradient_image, stop_process
from tests.core.milvus.records import DBA_SPEC as SPEC
from tests.core.milvus.records import DIM
from tests.core.milvus.records import distinct as records


def _all_vectors(store: MilvusVectorStore, field: str = "embedding") -> dict[int, np.ndarray]:
    out: dict[int, np.ndarray] = {}
    for ids, (vectors,) in store.iter_vectors(("raw",) if field == "raw" else ("embedding",)):
        out.update(zip(ids, vectors, strict=True))
    return out


def test_whiten_copies_every_row_whitened_and_swaps_the_alias(client: Any, tmp_path: Path) -> None:
    """The alias serves a whitened copy (same rows and metadata); the old collection is kept."""
    store = MilvusVectorStore.open(client, "images", SPEC, DIM, MilvusSettings())
    stored = records(40)
    store.insert(stored)
    blobs = LocalBlobStore(tmp_path / "blobs")
    result = whiten_collection(store, blobs, dim=6, batch_size=16)
    whitening = result.whitening
    assert (result.rows, whitening.dim) == (40, 6)
    assert store.live_collection() == result.current != result.previous
    assert store.stored_spec() == {**SPEC, "whitening": whitening.id, "dim": 6}
    assert store.count() == 40
    assert load_whitening(blobs, whitening.id).id == whitening.id
    assert blobs.exists(f"models/whitening/{whitening.id}.npz")
    vectors = _all_vectors(store)
    raw = np.stack([r.embedding for r in stored])
    expected = whitening.apply(raw)
    np.testing.assert_allclose(np.stack([vectors[r.meta.id] for r in stored]), expected, atol=1e-5)
    assert store.get([r.meta.id for r in stored]) == [r.meta for r in stored]
    assert client.has_collection(result.previous)
    old = MilvusVectorStore(client, result.previous, MilvusSettings())
    assert old.count() == 40
    with pytest.raises(ConfigError, match=f"already whitened \\({whitening.id}\\)"):
        whiten_collection(store, blobs)


def test_whiten_keeps_dba_on_whitened_raw(client: Any, tmp_path: Path) -> None:
    """A DBA collection's copy keeps whitened raw vectors and re-augments from them."""
    params = DbaParams(k=3, alpha=3.0)
    store = MilvusVectorStore.open(client, "images", SPEC, DIM, MilvusSettings(), dba=params)
    stored = records(30)
    store.insert(stored)
    result = whiten_collection(store, LocalBlobStore(tmp_path / "blobs"), dim=5)
    assert store.dba_params() == params
    ids = [r.meta.id for r in stored]
    whitened = result.whitening.apply(np.stack([r.embedding for r in stored]))
    raw = _all_vectors(store, "raw")
    np.testing.assert_allclose(np.stack([raw[i] for i in ids]), whitened, atol=1e-5)
    embedding = _all_vectors(store)
    np.testing.assert_allclose(
        np.stack([embedding[i] for i in ids]), dba(whitened, 3, 3.0), atol=1e-5
    )


def test_too_many_dimensions_is_a_clear_error(client: Any, tmp_path: Path) -> None:
    """Whitening to more dimensions than the collection supports is refused before any copy."""
    store = MilvusVectorStore.open(client, "images", SPEC, DIM, MilvusSettings())
    store.insert(records(5))
    with pytest.raises(ConfigError, match="cannot learn whitening on 'images'"):
        whiten_collection(store, LocalBlobStore(tmp_path / "blobs"), dim=6)
    assert store.stored_spec() == SPEC


def test_whitened_queries_find_each_image_first(
    settings: Settings, embedder: Embedder, demo_dir: Path, tmp_path: Path
) -> None:
    """Queries embedded with the collection's whitening find each stored image first."""
    blobs = blobs_from(settings)
    assert whitening_for(settings, blobs) is None
    store = store_from(settings, embedder)
    pipeline_from(settings, embedder, store, blobs).run(folder_items(demo_dir), progress=False)
    result = whiten_collection(existing_store_from(settings), blobs, dim=16)
    loaded = whitening_for(settings, blobs)
    assert loaded is not None
    assert loaded.id == result.whitening.id
    whitened = collection_embedder_from(settings, blobs)
    assert whitened.spec.to_dict() == {
        **embedder.spec.to_dict(), "whitening": result.whitening.id, "dim": 16,
    }
    store = store_from(settings, whitened)
    files = sorted(p for p in demo_dir.rglob("*") if p.is_file())
    outcomes = whitened.embed_bytes([p.read_bytes() for p in files])
    queries = np.stack([o.vector for o in outcomes if o.vector is not None])
    hits = store.search(queries, top_k=1)
    assert [Path(h[0].image.source).name for h in hits] == [p.name for p in files]
    # A later ingest into the whitened collection stores whitened vectors that are found too.
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "new.jpg").write_bytes(encode(gradient_image(seed=7)))
    report = pipeline_from(settings, whitened, store, blobs).run(folder_items(extra), progress=False)
    assert report.added == 1
    query = whitened.embed_bytes([(extra / "new.jpg").read_bytes()])[0].vector
    assert query is not None
    assert store.search(query[None, :], top_k=1)[0][0].image.source.endswith("new.jpg")
    blobs.delete(whitening_key(result.whitening.id))
    with pytest.raises(ConfigError, match=f"no 'models/whitening/{result.whitening.id}.npz'"):
        whitening_for(settings, blobs)
    assert whitening_for(
        settings.model_copy(update={"retrieval": settings.retrieval.model_copy(
            update={"whitening": "none"})}), blobs,
    ) is None


def test_cli_whiten(
    tmp_path: Path, demo_dir: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`lookalike whiten` prints the id and the kept collection; a second run is refused."""
    monkeypatch.setenv("LOOKALIKE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LOOKALIKE_MODEL__BACKBONE", "efficientnet_lite0")
    assert cli.main(["ingest", str(demo_dir), "--no-progress"]) == cli.EXIT_OK
    capsys.readouterr()
    assert cli.main(["whiten", "--dim", "12", "--power", "0.4"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    store = existing_store_from(Settings())
    whitening_id = store.stored_spec()["whitening"]
    assert f"whitening id: {whitening_id}" in out
    assert "unwhitened collection images__" in out
    assert cli.main(["whiten"]) == cli.EXIT_ERROR
    assert "already whitened" in capsys.readouterr().err
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "more.jpg").write_bytes(encode(gradient_image(seed=11)))
    assert cli.main(["ingest", str(tmp_path / "more"), "--no-progress"]) == cli.EXIT_OK
    assert store.count() == 25


def test_serve_searches_a_whitened_collection(tmp_path: Path, demo_dir: Path) -> None:
    """`lookalike serve` on a whitened collection whitens queries: each photo comes back first."""
    env = os.environ | {
        "LOOKALIKE_DATA_DIR": str(tmp_path / "data"),
        "LOOKALIKE_MODEL__BACKBONE": "efficientnet_lite0",
        "LOOKALIKE_MODEL__THREADS": "2",
    }
    for command in (["ingest", str(demo_dir), "--no-progress"], ["whiten", "--dim", "16"]):
        done = subprocess.run([sys.executable, "-m", "lookalike.cli", *command], env=env,
                              capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    port = free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "lookalike.cli", "serve", "--host", "127.0.0.1",
             "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 120
            while "gRPC server on" not in log_path.read_text():
                assert process.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)
            photos = sorted(p for p in demo_dir.rglob("*") if p.is_file())[::6]
            with LookalikeClient(f"127.0.0.1:{port}") as client:
                for photo in photos:
                    first = client.search(image=photo.read_bytes(), top_k=3).hits[0]
                    assert first.source == str(photo.absolute())
                    assert first.score == pytest.approx(1.0, abs=1e-3)
        finally:
            stop_process(process)
