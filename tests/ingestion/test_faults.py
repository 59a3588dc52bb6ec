"""Faults: an S3 server that stops mid-run and comes back; stores unreachable at start."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import cast

import pytest
from pydantic import SecretStr

from lookalike import cli
from lookalike.compose import store_from
from lookalike.core.blob_store import BlobStore, open_blob_store
from lookalike.core.ids import content_id
from lookalike.core.schemas import image_key, thumb_key
from lookalike.core.settings import BlobSettings, Settings
from lookalike.embedder.runtime import Embedder
from lookalike.ingestion.pipeline import IngestPipeline, IngestReport
from lookalike.ingestion.retry import RetryPolicy
from lookalike.ingestion.sources import folder_items
from tests.conftest import encode, free_port, gradient_image, make_settings, stop_process

_PORT_FLAGS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
               "filer.port", "filer.port.grpc", "s3.port.grpc", "admin.port", "admin.port.grpc",
               "webdav.port", "debug.port", "s3.debug.port")


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


def test_s3_down_for_ten_seconds_mid_run_loses_nothing(
    tmp_path: Path, embedder: Embedder
) -> None:
    """S3 stopped mid-run and restarted 10 s later on the same port: the run completes, all stored."""
    root = tmp_path / "photos"
    root.mkdir()
    for seed in range(24):
        (root / f"{seed:02d}.jpg").write_bytes(encode(gradient_image(40, 32, seed=seed)))
    server = _OwnSeaweed(tmp_path / "seaweed")
    server.start()
    try:
        settings: Settings = make_settings(tmp_path / "data")
        bucket = f"lk-{uuid.uuid4().hex[:10]}"
        s3 = open_blob_store(f"s3://{bucket}", server.settings)
        blobs = _PausingBlobs(s3, pause_at=6)
        store = store_from(settings, embedder)
        pipeline = IngestPipeline(
            embedder, store, cast(BlobStore, blobs), batch_size=4, decode_workers=2, thumbnail_px=64,
            write_workers=2, retry=RetryPolicy(initial_s=0.2, max_s=2.0, deadline_s=90),
        )
        outcome: list[IngestReport | BaseException] = []

        def ingest() -> None:
            try:
                outcome.append(pipeline.run(folder_items(root), progress=False))
            except BaseException as exc:
                outcome.append(exc)

        runner = threading.Thread(target=ingest)
        runner.start()
        assert blobs.reached.wait(60), "the run never reached the pause"
        server.stop()
        blobs.server_stopped.set()
        time.sleep(10)
        assert runner.is_alive(), "the run ended while S3 was down"
        server.start()
        runner.join(120)
        assert not runner.is_alive()
        (report,) = outcome
        assert isinstance(report, IngestReport), report
        assert report.added == 24
        assert not report.failed
        assert report.retries > 0
        assert store.count() == 24
        fresh = open_blob_store(f"s3://{bucket}", server.settings)
        for path in sorted(root.iterdir()):
            image_id, digest = content_id(path.read_bytes())
            meta = store.get([image_id])[0]
            assert meta is not None
            assert meta.blob_key == image_key(digest, "jpg")
            assert fresh.get(meta.blob_key) == path.read_bytes()
            assert fresh.exists(thumb_key(digest))
    finally:
        server.stop()


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
