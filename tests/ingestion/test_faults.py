"""Faults with real servers, each bounded in time: Milvus or S3 stopped for 10 s in the middle of
an ingest (the run retries and ends with what a clean run stores), the gRPC API while Milvus is
down (UNAVAILABLE, NOT_SERVING, then serving again by itself), stores unreachable at start."""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import grpc
import numpy as np
import pytest
from numpy.typing import NDArray
from pydantic import SecretStr

from lookalike import cli
from lookalike.app.compose import blobs_from, engine_from, store_from
from lookalike.core.blob_store import BlobStore, open_blob_store
from lookalike.core.ids import content_id
from lookalike.core.schemas import ImageMeta, ImageRecord, thumb_key
from lookalike.core.settings import BlobSettings, ServerSettings, Settings
from lookalike.core.vector_store import MilvusVectorStore, VectorStore
from lookalike.embedder.runtime import Embedder
from lookalike.ingestion.pipeline import IngestPipeline, IngestReport
from lookalike.ingestion.retry import RetryPolicy
from lookalike.ingestion.sources import folder_items
from lookalike.services.client import ClientError, LookalikeClient
from lookalike.services.server import SEARCH_SERVICE, start_server
from tests.conftest import (
    TEST_MODEL,
    MilvusServer,
    encode,
    free_port,
    gradient_image,
    make_settings,
    stop_process,
)

# How long a store stays down in the middle of a run.
DOWN_S = 10.0
# Each Milvus call gives up after this long (MilvusSettings.timeout_s).
MILVUS_TIMEOUT_S = 3.0
# Milvus 2.3.5 stopped for DOWN_S serves reads again some 35 s after it is started (12 s to
# start, then about 24 s until its collections answer, here): the deadline leaves room for more.
RETRY = RetryPolicy(initial_s=0.2, max_s=2.0, deadline_s=120)

_PORT_FLAGS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
               "filer.port", "filer.port.grpc", "s3.port.grpc", "admin.port", "admin.port.grpc",
               "webdav.port", "debug.port", "s3.debug.port")


def _photos(root: Path, count: int) -> Path:
    """`count` small distinct JPEGs under `root`, in two label folders."""
    for seed in range(count):
        folder = root / ("even" if seed % 2 == 0 else "odd")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{seed:02d}.jpg").write_bytes(encode(gradient_image(40, 32, seed=seed)))
    return root


def _pipeline(embedder: Embedder, store: VectorStore, blobs: BlobStore) -> IngestPipeline:
    """The pipeline every run here uses: batches of 4, two writers, RETRY."""
    return IngestPipeline(embedder, store, blobs, batch_size=4, decode_workers=2,
                          thumbnail_px=64, write_workers=2, retry=RETRY)


@dataclass(frozen=True)
class _Stored:
    """What a run left in its stores: each id's metadata (less its ingest time), vector,
    original and thumbnail."""

    count: int
    metas: dict[int, ImageMeta]
    vectors: dict[int, NDArray[np.float32]]
    originals: dict[int, bytes]
    thumbnails: dict[int, bytes]


def _stored(store: MilvusVectorStore, blobs: BlobStore) -> _Stored:
    """Everything `store` and `blobs` hold for the collection, read back from the servers."""
    records = [r for batch in store.iter_records() for r in batch]
    metas = {r.meta.id: dataclasses.replace(r.meta, ingested_at=0) for r in records}
    return _Stored(
        count=store.count(),
        metas=metas,
        vectors={r.meta.id: r.embedding for r in records},
        originals={i: blobs.get(m.blob_key) for i, m in metas.items()},
        thumbnails={i: blobs.get(thumb_key(m.sha256)) for i, m in metas.items()},
    )


def _assert_same(faulted: _Stored, clean: _Stored, root: Path) -> None:
    """The run that met the fault stored exactly what the clean run stored, and that is every
    photo under `root`."""
    photos = {content_id(p.read_bytes())[0]: p.read_bytes() for p in root.rglob("*.jpg")}
    assert clean.count == len(clean.metas) == len(photos)
    assert faulted.count == clean.count
    assert set(faulted.metas) == set(clean.metas) == set(photos)
    assert faulted.metas == clean.metas
    assert faulted.originals == clean.originals == photos
    # Thumbnails are JPEG encodes of the same decode with the same encoder: byte for byte equal.
    assert faulted.thumbnails == clean.thumbnails
    for image_id, vector in clean.vectors.items():
        np.testing.assert_allclose(faulted.vectors[image_id], vector, atol=1e-6)


def _in_thread(pipeline: IngestPipeline, root: Path
               ) -> tuple[threading.Thread, list[IngestReport | BaseException]]:
    """A started thread running `pipeline` over `root`, and where its outcome will be."""
    outcome: list[IngestReport | BaseException] = []

    def ingest() -> None:
        try:
            outcome.append(pipeline.run(folder_items(root), progress=False))
        except BaseException as exc:
            outcome.append(exc)

    runner = threading.Thread(target=ingest, name="faulted-ingest")
    runner.start()
    return runner, outcome


def _finished(runner: threading.Thread, outcome: list[IngestReport | BaseException],
              count: int) -> IngestReport:
    """The report of a run that met a fault: it retried and stored every one of `count` files."""
    runner.join(180)
    assert not runner.is_alive(), "the run never finished"
    (report,) = outcome
    assert isinstance(report, IngestReport), report
    assert (report.added, report.failed, report.cancelled) == (count, [], False)
    assert report.retries > 0
    return report


class _OwnSeaweed:
    """A `weed mini` of this test's own (every port its own), which it may stop and restart."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "data").mkdir(parents=True)
        self.config = root / "s3.json"
        self.config.write_text(json.dumps({"identities": [{
            "name": "test", "credentials": [{"accessKey": "k", "secretKey": "secret-key"}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        self.s3_port = free_port()
        self.ports = {flag: free_port() for flag in _PORT_FLAGS}
        self.process: subprocess.Popen[bytes] | None = None
        self.settings = BlobSettings(
            endpoint=f"127.0.0.1:{self.s3_port}", access_key=SecretStr("k"),
            secret_key=SecretStr("secret-key"), region="us-east-1",
        )

    def start(self) -> None:
        weed = Path(sys.executable).parent / "weed"
        log = (self.root / "weed.log").open("ab")
        self.process = subprocess.Popen(
            [str(weed), "mini", f"-dir={self.root / 'data'}", "-ip=127.0.0.1",
             "-ip.bind=127.0.0.1", f"-s3.port={self.s3_port}", f"-s3.config={self.config}",
             "-master.telemetry=false",
             *(f"-{flag}={port}" for flag, port in self.ports.items())],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
        )
        log.close()
        deadline = time.monotonic() + 60
        while True:
            try:
                open_blob_store("s3://probe", self.settings).ping()
                return
            except Exception:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"weed mini did not start: {(self.root / 'weed.log').read_text()[-2000:]}"
                    ) from None
                time.sleep(0.3)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None


class _PausingBlobs:
    """Real S3 blobs; the n-th image put waits until the test has stopped the server."""

    def __init__(self, inner: BlobStore, pause_at: int) -> None:
        self.inner = inner
        self.pause_at = pause_at
        self.image_puts = 0
        self.reached = threading.Event()
        self.server_stopped = threading.Event()
        self.lock = threading.Lock()

    def put(self, key: str, data: bytes, content_type: str) -> None:
        if key.startswith("images/"):
            with self.lock:
                self.image_puts += 1
                pause = self.image_puts == self.pause_at
            if pause:
                self.reached.set()
                self.server_stopped.wait(60)
        self.inner.put(key, data, content_type)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


class _PausingStore:
    """A real Milvus collection; its n-th insert waits until the test has stopped the server."""

    def __init__(self, inner: MilvusVectorStore, pause_at: int) -> None:
        self.inner = inner
        self.pause_at = pause_at
        self.inserts = 0
        self.reached = threading.Event()
        self.server_stopped = threading.Event()
        self.lock = threading.Lock()

    def insert(self, records: Sequence[ImageRecord]) -> None:
        with self.lock:
            self.inserts += 1
            pause = self.inserts == self.pause_at
        if pause:
            self.reached.set()
            self.server_stopped.wait(60)
        self.inner.insert(records)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def _server_settings(data_dir: Path, server: MilvusServer) -> Settings:
    """Test settings with vectors on `server`, each call bounded by MILVUS_TIMEOUT_S, and
    blobs in a local folder under `data_dir`."""
    return Settings(data_dir=data_dir, model=TEST_MODEL,
                    milvus=server.settings(timeout_s=MILVUS_TIMEOUT_S))


def _collection() -> str:
    return f"faults_{uuid.uuid4().hex[:10]}"


@pytest.mark.milvus_server
def test_milvus_down_for_ten_seconds_mid_run_loses_nothing(
    tmp_path: Path, embedder: Embedder, stoppable_milvus: MilvusServer
) -> None:
    """Milvus stopped mid-run and restarted 10 s later: the run retries and completes, and the
    collection and blobs equal a clean run's (count, ids, metadata, vectors, blobs, thumbnails)."""
    root = _photos(tmp_path / "photos", 24)
    clean_settings = _server_settings(tmp_path / "clean", stoppable_milvus)
    clean_store = store_from(clean_settings, embedder, _collection())
    clean_blobs = blobs_from(clean_settings)
    _pipeline(embedder, clean_store, clean_blobs).run(folder_items(root), progress=False)
    clean = _stored(clean_store, clean_blobs)

    settings = _server_settings(tmp_path / "faulted", stoppable_milvus)
    store = store_from(settings, embedder, _collection())
    blobs = blobs_from(settings)
    # Batches of 4: two batches are stored before the fault, four after it.
    paused = _PausingStore(store, pause_at=3)
    runner, outcome = _in_thread(_pipeline(embedder, cast(VectorStore, paused), blobs), root)
    assert paused.reached.wait(60), "the run never reached the pause"
    stoppable_milvus.stop()
    paused.server_stopped.set()
    time.sleep(DOWN_S)
    assert runner.is_alive(), "the run ended while Milvus was down"
    stoppable_milvus.start()
    _finished(runner, outcome, 24)
    _assert_same(_stored(store, blobs), clean, root)


def test_s3_down_for_ten_seconds_mid_run_loses_nothing(
    tmp_path: Path, embedder: Embedder
) -> None:
    """S3 stopped mid-run and restarted 10 s later on the same port: the run retries and
    completes, and the bucket and collection equal a clean run's (count, ids, metadata,
    vectors, blobs, thumbnails)."""
    root = _photos(tmp_path / "photos", 24)
    server = _OwnSeaweed(tmp_path / "seaweed")
    server.start()
    try:
        clean_store = store_from(make_settings(tmp_path / "clean"), embedder)
        clean_bucket = open_blob_store(f"s3://lk-{uuid.uuid4().hex[:10]}", server.settings)
        _pipeline(embedder, clean_store, clean_bucket).run(folder_items(root), progress=False)
        clean = _stored(clean_store, clean_bucket)

        store = store_from(make_settings(tmp_path / "faulted"), embedder)
        bucket = f"s3://lk-{uuid.uuid4().hex[:10]}"
        # The 6th original's put (second batch) waits until S3 is down.
        blobs = _PausingBlobs(open_blob_store(bucket, server.settings), pause_at=6)
        runner, outcome = _in_thread(_pipeline(embedder, store, cast(BlobStore, blobs)), root)
        assert blobs.reached.wait(60), "the run never reached the pause"
        server.stop()
        blobs.server_stopped.set()
        time.sleep(DOWN_S)
        assert runner.is_alive(), "the run ended while S3 was down"
        server.start()
        _finished(runner, outcome, 24)
        _assert_same(_stored(store, open_blob_store(bucket, server.settings)), clean, root)
    finally:
        server.stop()


def _search_ids(client: LookalikeClient, query: bytes, query_id: int) -> tuple[list[int], ...]:
    """Ids found by image and by stored id."""
    return ([h.id for h in client.search(image=query, top_k=5).hits],
            [h.id for h in client.search(image_id=query_id, top_k=5).hits])


def _wait(what: str, done: Callable[[], bool], timeout_s: float) -> float:
    """Seconds until `done()`; fails the test once `timeout_s` have passed."""
    started = time.monotonic()
    while not done():
        assert time.monotonic() - started < timeout_s, f"{what} not within {timeout_s:.0f} s"
        time.sleep(0.2)
    return time.monotonic() - started


@pytest.mark.milvus_server
def test_api_is_unavailable_while_milvus_is_down_and_recovers_by_itself(
    tmp_path: Path, embedder: Embedder, stoppable_milvus: MilvusServer
) -> None:
    """While Milvus is down, searches by image, by id and with a filter answer UNAVAILABLE within
    the Milvus timeout and health reports NOT_SERVING; once Milvus is back, the same server
    answers UNAVAILABLE (health still NOT_SERVING) until Milvus serves reads again, then
    SERVING and what it found before."""
    root = _photos(tmp_path / "photos", 8)
    settings = _server_settings(tmp_path / "data", stoppable_milvus)
    store = store_from(settings, embedder, _collection())
    blobs = blobs_from(settings)
    _pipeline(embedder, store, blobs).run(folder_items(root), progress=False)
    query = (root / "odd" / "03.jpg").read_bytes()
    query_id = content_id(query)[0]
    running = start_server(engine_from(settings, embedder, store, blobs),
                           ServerSettings(host="127.0.0.1", port=0, health_interval_s=0.2))
    try:
        with LookalikeClient(running.address, timeout_s=30) as client:
            found = _search_ids(client, query, query_id)
            assert found[0][0] == query_id
            assert client.healthy()
            assert client.healthy(SEARCH_SERVICE)

            stoppable_milvus.stop()
            down_at = time.monotonic()
            _wait("NOT_SERVING", lambda: not client.healthy(), 5)
            assert not client.healthy(SEARCH_SERVICE)
            # A filter is not to blame either: the store could not be asked.
            for search in ({"image": query}, {"image_id": query_id},
                           {"image": query, "labels": ["odd"]}):
                started = time.monotonic()
                with pytest.raises(ClientError) as refused:
                    client.search(top_k=5, **search)
                assert refused.value.code == grpc.StatusCode.UNAVAILABLE, refused.value
                assert not refused.value.unreachable  # the API answered, about Milvus
                assert time.monotonic() - started < MILVUS_TIMEOUT_S + 2
            time.sleep(max(0.0, DOWN_S - (time.monotonic() - down_at)))
            assert not client.healthy()

            stoppable_milvus.start()
            # Milvus answers again, but its reads time out until it has loaded its collections.
            tries: list[tuple[grpc.StatusCode, float]] = []

            def serves() -> bool:
                started = time.monotonic()
                code = grpc.StatusCode.OK
                try:
                    return client.healthy() and _search_ids(client, query, query_id) == found
                except ClientError as exc:
                    code = exc.code
                    return False
                finally:
                    tries.append((code, time.monotonic() - started))

            # Health says SERVING only once Milvus serves reads: a search right after it works.
            _wait("SERVING again", client.healthy, 120)
            assert _search_ids(client, query, query_id) == found
            _wait("serving again", serves, 120)
            assert {code for code, _ in tries} <= {grpc.StatusCode.OK,
                                                   grpc.StatusCode.UNAVAILABLE}, tries
            # Each answer within the Milvus timeout (two searches, a retry), rather than one
            # hanging until Milvus serves reads again (~25 s).
            assert all(seconds < 4 * MILVUS_TIMEOUT_S for _, seconds in tries), tries
            assert client.healthy(SEARCH_SERVICE)
    finally:
        running.stop(grace_s=1.0)


def test_unreachable_s3_at_start_fails_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`lookalike ingest` with an S3 endpoint that does not answer exits 1 within seconds, saying so."""
    (tmp_path / "photos").mkdir()
    monkeypatch.setenv("LOOKALIKE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LOOKALIKE_BLOBS__URL", "s3://images")
    monkeypatch.setenv("LOOKALIKE_BLOBS__ENDPOINT", f"127.0.0.1:{free_port()}")
    started = time.monotonic()
    assert cli.main(["ingest", str(tmp_path / "photos"), "--no-progress"]) == cli.EXIT_ERROR
    assert time.monotonic() - started < 15
    assert "error: S3 bucket 'images' is unreachable" in capsys.readouterr().err


def test_unreachable_milvus_at_start_fails_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`lookalike ingest` with a Milvus URI where nothing listens exits 1 quickly, saying so."""
    (tmp_path / "photos").mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("LOOKALIKE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LOOKALIKE_MILVUS__URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("LOOKALIKE_MILVUS__TIMEOUT_S", "3")
    monkeypatch.setenv("LOOKALIKE_MODEL__BACKBONE", "efficientnet_lite0")
    started = time.monotonic()
    assert cli.main(["ingest", str(tmp_path / "photos"), "--no-progress"]) == cli.EXIT_ERROR
    assert time.monotonic() - started < 30
    assert f"error: cannot open Milvus at http://127.0.0.1:{port}" in capsys.readouterr().err
