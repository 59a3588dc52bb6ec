"""`lookalike reindex` rebuilds a collection with another model and swaps its alias under load."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from lookalike import cli
from lookalike.app.compose import embedder_from, pipeline_from
from lookalike.core.blob_store import LocalBlobStore
from lookalike.core.errors import ConfigError
from lookalike.core.rerank import dba as augment
from lookalike.core.schemas import ImageMeta
from lookalike.core.settings import MilvusSettings, Settings
from lookalike.core.vector_store import DbaParams, MilvusVectorStore, connect_milvus
from lookalike.embedder.runtime import Embedder
from lookalike.ingestion.sources import folder_items
from lookalike.maintenance.reindex import ReindexReport, ReindexStep, reindex
from tests.conftest import TEST_MODEL, MilvusServer, encode, gradient_image, make_settings

NEW_BACKBONE = "mobilenet_v2"
# Threads searching the alias during a re-index, and the rounds each runs after the swap.
SEARCH_THREADS = 4
AFTER_SWAP = 5


@pytest.fixture(scope="module")
def new_embedder(tmp_path_factory: pytest.TempPathFactory) -> Embedder:
    """The model re-indexed to: the offline ImageNet MobileNetV2."""
    settings = make_settings(tmp_path_factory.mktemp("new-embedder"))
    model = embedder_from(settings.model_copy(
        update={"model": TEST_MODEL.model_copy(update={"backbone": NEW_BACKBONE})}
    ))
    model.load()
    return model


def _server_settings(tmp_path: Path, server: MilvusServer) -> Settings:
    return make_settings(tmp_path / "data").model_copy(update={"milvus": server.settings()})


def _build(
    client: Any, settings: Settings, embedder: Embedder, blobs: LocalBlobStore, folder: Path,
    dba: DbaParams | None = None,
) -> MilvusVectorStore:
    """Collection `images`, filled by the ingestion pipeline from `folder`."""
    store = MilvusVectorStore.open(
        client, settings.milvus.collection, embedder.spec.to_dict(), embedder.spec.dim,
        settings.milvus, dba=dba,
    )
    report = pipeline_from(settings, embedder, store, blobs).run(
        folder_items(folder), progress=False
    )
    assert not report.failed
    return store


def _photos(root: Path, seeds: range) -> Path:
    root.mkdir(parents=True)
    for seed in seeds:
        (root / f"g{seed}.jpg").write_bytes(encode(gradient_image(seed=seed)))
    return root


def _all_meta(store: MilvusVectorStore) -> dict[int, ImageMeta]:
    return {m.id: m for ids in store.iter_ids(batch_size=100) for m in store.get(ids)
            if m is not None}


def _vectors(store: MilvusVectorStore, ids: list[int]) -> NDArray[np.float32]:
    found = store.get_vectors(ids)
    assert all(v is not None for v in found)
    return np.stack([v for v in found if v is not None])


def _embedded(embedder: Embedder, metas: list[ImageMeta]) -> NDArray[np.float32]:
    outcomes = embedder.embed_bytes([Path(m.source).read_bytes() for m in metas])
    return np.stack([o.vector for o in outcomes if o.vector is not None])


class SearchLoop:
    """Searches the public alias from its own client in a few threads until told to stop,
    counting every failure.

    Each round searches with a vector kept from the old collection, then by id: the id's stored
    vector is read through the alias and searched for with metadata, as the API's search by id
    does. Once `swapped` is set, each thread runs AFTER_SWAP more rounds.
    """

    def __init__(self, uri: str, settings: MilvusSettings, ids: list[int],
                 vectors: NDArray[np.float32]) -> None:
        self._client = connect_milvus(uri, settings)
        self._store = MilvusVectorStore(self._client, settings.collection, settings)
        self._ids = ids
        self._vectors = vectors
        self._lock = threading.Lock()
        self.swapped = threading.Event()
        self.rounds = {"before": 0, "after": 0}
        self.failures: list[str] = []
        self.self_first_after_swap: list[bool] = []
        self._threads = [threading.Thread(target=self._run, args=(t,), daemon=True)
                         for t in range(SEARCH_THREADS)]

    def __enter__(self) -> SearchLoop:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.swapped.set()
        for thread in self._threads:
            thread.join(timeout=120)
        self._client.close()
        assert not any(t.is_alive() for t in self._threads), "the search loop did not stop"

    def _run(self, offset: int) -> None:
        after = 0
        for n in itertools.count(offset):
            if after >= AFTER_SWAP:
                return
            phase = "after" if self.swapped.is_set() else "before"
            self._round(n % len(self._ids), phase)
            after += phase == "after"

    def _round(self, j: int, phase: str) -> None:
        failure: str | None = None
        self_first: bool | None = None
        try:
            self._store.search_ids(self._vectors[j][None, :], top_k=5)
            stored = self._store.get_vectors([self._ids[j]])[0]
            if stored is None:
                failure = f"id {self._ids[j]} not found through the alias"
            else:
                hits = self._store.search(stored[None, :], top_k=5)[0]
                self_first = hits[0].image.id == self._ids[j]
        except Exception as exc:  # every failure counts, whatever it is
            failure = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self.rounds[phase] += 1
            if failure is not None:
                self.failures.append(failure)
            if phase == "after" and self_first is not None:
                self.self_first_after_swap.append(self_first)


@pytest.mark.milvus_server
def test_reindex_swaps_the_alias_under_a_search_loop(
    server_client: Any, milvus_server: MilvusServer, embedder: Embedder,
    new_embedder: Embedder, demo_dir: Path, tmp_path: Path,
) -> None:
    """Searches through the alias never fail while the new model's collection is built and
    swapped in; after the swap it serves the new model's vectors with the same metadata."""
    settings = _server_settings(tmp_path, milvus_server)
    blobs = LocalBlobStore(tmp_path / "blobs")
    store = _build(server_client, settings, embedder, blobs, demo_dir)
    before = _all_meta(store)
    ids = sorted(before)
    old_vectors = _vectors(store, ids)
    old_spec = store.stored_spec()
    steps: list[ReindexStep] = []

    with SearchLoop(milvus_server.uri, settings.milvus, ids, old_vectors) as loop:
        def progress(step: ReindexStep, report: ReindexReport) -> None:
            steps.append(step)
            if step == "swapped":
                loop.swapped.set()

        report = reindex(store, new_embedder, blobs, batch_size=8, workers=2, progress=progress)
    assert loop.failures == []
    assert loop.rounds["before"] >= SEARCH_THREADS
    assert loop.rounds["after"] == SEARCH_THREADS * AFTER_SWAP
    assert loop.self_first_after_swap == [True] * SEARCH_THREADS * AFTER_SWAP
    assert steps[-3:] == ["copied", "caught_up", "swapped"]
    assert steps.count("copying") == 3  # 24 images in batches of 8

    assert (report.swapped, report.total, report.rows, report.failed) == (True, 24, 24, [])
    assert store.live_collection() == report.current != report.previous
    new_spec = new_embedder.spec.to_dict()
    assert store.stored_spec() == report.spec == new_spec
    assert (new_spec["backbone"], old_spec["backbone"]) == (NEW_BACKBONE, "efficientnet_lite0")
    assert store.count() == 24
    assert _all_meta(store) == before
    new_vectors = _vectors(store, ids)
    assert new_vectors.shape == (24, new_spec["dim"])
    metas = [before[i] for i in ids]
    np.testing.assert_allclose(new_vectors, _embedded(new_embedder, metas), atol=1e-4)
    assert not np.allclose(new_vectors, old_vectors, atol=1e-2)
    # The new model's query for each photo finds it first.
    hits = store.search_ids(_embedded(new_embedder, metas), top_k=1)
    assert [h[0].id for h in hits] == ids
    # The old collection is kept, whole, for a rollback.
    assert server_client.has_collection(report.previous)
    old = MilvusVectorStore(server_client, report.previous, settings.milvus)
    assert old.count() == 24
    np.testing.assert_allclose(_vectors(old, ids), old_vectors, atol=1e-6)
    store.point_alias(report.previous)
    assert store.stored_spec() == old_spec


@pytest.mark.milvus_server
def test_missing_originals_keep_the_old_collection_serving(
    server_client: Any, milvus_server: MilvusServer, embedder: Embedder,
    new_embedder: Embedder, tmp_path: Path,
) -> None:
    """A missing or undecodable original is reported; the alias moves only with allow_missing."""
    settings = _server_settings(tmp_path, milvus_server)
    blobs = LocalBlobStore(tmp_path / "blobs")
    store = _build(server_client, settings, embedder, blobs, _photos(tmp_path / "photos", range(5)))
    metas = sorted(_all_meta(store).values(), key=lambda m: m.id)
    missing, broken = metas[0], metas[1]
    blobs.delete(missing.blob_key)
    blobs.put(broken.blob_key, b"not an image any more", "image/jpeg")
    previous = store.live_collection()

    report = reindex(store, new_embedder, blobs, batch_size=2)
    assert not report.swapped
    assert sorted((f.id, f.blob_key, f.reason) for f in report.failed) == sorted([
        (missing.id, missing.blob_key, "blob missing from the blob store"),
        (broken.id, broken.blob_key, "cannot decode: not a recognised image format"),
    ])
    assert report.rows == 3
    assert store.live_collection() == previous
    assert store.stored_spec() == embedder.spec.to_dict()
    assert store.count() == 5

    again = reindex(store, new_embedder, blobs, batch_size=2, allow_missing=True)
    assert (again.swapped, again.rows, len(again.failed)) == (True, 3, 2)
    assert again.current == report.current
    assert store.stored_spec() == new_embedder.spec.to_dict()
    assert sorted(_all_meta(store)) == sorted(m.id for m in metas[2:])


@pytest.mark.milvus_server
def test_catch_up_carries_over_ingests_and_deletes_made_during_the_copy(
    server_client: Any, milvus_server: MilvusServer, embedder: Embedder,
    new_embedder: Embedder, tmp_path: Path,
) -> None:
    """An image ingested and one deleted after the copy are in (and out of) the new collection."""
    settings = _server_settings(tmp_path, milvus_server)
    blobs = LocalBlobStore(tmp_path / "blobs")
    store = _build(server_client, settings, embedder, blobs, _photos(tmp_path / "photos", range(4)))
    stored = _all_meta(store)
    deleted = min(stored)
    late = _photos(tmp_path / "late", range(10, 11))

    def progress(step: ReindexStep, report: ReindexReport) -> None:
        if step == "copied":
            assert pipeline_from(settings, embedder, store, blobs).run(
                folder_items(late), progress=False).added == 1
            assert store.delete([deleted]) == 1

    report = reindex(store, new_embedder, blobs, batch_size=3, progress=progress)
    assert (report.swapped, report.total, report.caught_up, report.removed) == (True, 4, 1, 1)
    assert report.rows == store.count() == 4
    after = _all_meta(store)
    added = [m for m in after.values() if m.source.startswith(str(late))]
    assert len(added) == 1
    assert set(after) == (set(stored) - {deleted}) | {added[0].id}
    assert all(after[i] == stored[i] for i in set(stored) - {deleted})
    np.testing.assert_allclose(
        _vectors(store, [added[0].id]), _embedded(new_embedder, added), atol=1e-4
    )


def test_reindex_keeps_dba_recomputed_from_the_new_model(
    client: Any, embedder: Embedder, new_embedder: Embedder, tmp_path: Path
) -> None:
    """A DBA collection's new version keeps its parameters, augmenting the new model's raw
    descriptors."""
    params = DbaParams(k=2, alpha=1.0)
    settings = make_settings(tmp_path / "data")
    blobs = LocalBlobStore(tmp_path / "blobs")
    store = _build(client, settings, embedder, blobs, _photos(tmp_path / "photos", range(5)),
                   dba=params)
    assert reindex(store, new_embedder, blobs, batch_size=2).swapped
    assert store.dba_params() == params
    metas = sorted(_all_meta(store).values(), key=lambda m: m.id)
    ids = [m.id for m in metas]
    raw = np.stack([v for v in store.get_raw_vectors(ids) if v is not None])
    np.testing.assert_allclose(raw, _embedded(new_embedder, metas), atol=1e-4)
    np.testing.assert_allclose(_vectors(store, ids), augment(raw, 2, 1.0), atol=1e-4)


class CountingBlobs(LocalBlobStore):
    """A local blob store that counts the blobs written to it."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.puts = 0

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self.puts += 1
        super().put(key, data, content_type)


def test_reindex_runs_through_the_ingest_pipeline(
    client: Any, embedder: Embedder, new_embedder: Embedder, tmp_path: Path
) -> None:
    """The copy runs the ingest pipeline's stages over the stored originals and writes vectors
    only, keeping every blob and row's metadata as it was."""
    settings = make_settings(tmp_path / "data")
    store = _build(client, settings, embedder, LocalBlobStore(tmp_path / "blobs"),
                   _photos(tmp_path / "photos", range(3)))
    before = _all_meta(store)
    blobs = CountingBlobs(tmp_path / "blobs")
    report = reindex(store, new_embedder, blobs, batch_size=2)
    assert (report.swapped, report.rows, report.failed) == (True, 3, [])
    seconds = report.stage_seconds
    assert all(seconds[stage] > 0 for stage in ("read", "decode", "embed", "write_vectors"))
    assert (seconds["write_blobs"], blobs.puts) == (0.0, 0)
    assert _all_meta(store) == before


def test_reindex_to_the_same_model_is_refused(
    client: Any, embedder: Embedder, tmp_path: Path
) -> None:
    """Re-indexing with the model a collection was built with is refused before any copy."""
    store = MilvusVectorStore.open(
        client, "images", embedder.spec.to_dict(), embedder.spec.dim, MilvusSettings()
    )
    with pytest.raises(ConfigError, match="already holds vectors of this model"):
        reindex(store, embedder, LocalBlobStore(tmp_path / "blobs"))
    assert client.list_collections() == [store.live_collection()]


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The CLI's settings rooted in a temporary data dir, with the test model."""
    monkeypatch.setenv("LOOKALIKE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LOOKALIKE_MODEL__BACKBONE", "efficientnet_lite0")
    monkeypatch.setenv("LOOKALIKE_MODEL__THREADS", "2")
    return tmp_path / "data"


def test_cli_reindex(
    cli_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`lookalike reindex` keeps the old collection serving while originals are missing, swaps
    with --allow-missing (exit 3), and refuses the model the collection already has."""
    photos = _photos(tmp_path / "photos", range(3))
    assert cli.main(["ingest", str(photos), "--no-progress"]) == cli.EXIT_OK
    blob = next((cli_env / "blobs" / "images").iterdir())
    blob.unlink()
    capsys.readouterr()
    assert cli.main(["reindex", "--model", NEW_BACKBONE]) == cli.EXIT_ERROR
    captured = capsys.readouterr()
    assert f"(images/{blob.name}): blob missing" in captured.err
    assert "still serves images__" in captured.err
    assert "--allow-missing" in captured.err

    assert cli.main(["reindex", "--model", NEW_BACKBONE, "--allow-missing"]) == (
        cli.EXIT_SOME_FILES_FAILED
    )
    out = capsys.readouterr().out
    assert "copied 2/3 images" in out
    assert "2 images re-indexed into images__" in out
    assert f"LOOKALIKE_MODEL__BACKBONE={NEW_BACKBONE}" in out
    assert "the previous collection images__" in out
    assert "roll back by pointing alias 'images' at it" in out

    assert cli.main(["reindex", "--model", NEW_BACKBONE]) == cli.EXIT_ERROR
    assert "nothing to re-index" in capsys.readouterr().err
