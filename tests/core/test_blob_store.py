"""The local blob store (the S3 one shares its interface and is exercised against a real server)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lookalike.core.blob_store import LocalBlobStore, open_blob_store
from lookalike.core.errors import ConfigError, InvalidArgument, NotFound
from lookalike.core.settings import BlobSettings


def test_put_get_exists_delete_round_trip(tmp_path: Path) -> None:
    """What is put comes back; delete removes it and is idempotent."""
    store = LocalBlobStore(tmp_path)
    store.put("images/abc.jpg", b"data", "image/jpeg")
    assert store.exists("images/abc.jpg")
    assert store.get("images/abc.jpg") == b"data"
    store.delete("images/abc.jpg")
    store.delete("images/abc.jpg")
    assert not store.exists("images/abc.jpg")
    with pytest.raises(NotFound, match=r"images/abc\.jpg"):
        store.get("images/abc.jpg")
    assert store.presigned_url("images/abc.jpg", 60) is None


def test_create_stores_only_when_absent_and_exactly_once_under_a_race(tmp_path: Path) -> None:
    """`create` never replaces a blob; of 16 threads creating one key at once, one wins."""
    store = LocalBlobStore(tmp_path)
    assert store.create("claims/v1", b"first", "text/plain")
    assert not store.create("claims/v1", b"second", "text/plain")
    assert store.get("claims/v1") == b"first"
    start = threading.Barrier(16)

    def create(n: int) -> bool:
        start.wait()
        return store.create("claims/v2", str(n).encode(), "text/plain")

    with ThreadPoolExecutor(16) as pool:
        won = [n for n, created in enumerate(pool.map(create, range(16))) if created]
    assert len(won) == 1
    assert store.get("claims/v2") == str(won[0]).encode()
    assert [p.name for p in (tmp_path / "claims").iterdir() if p.name.startswith(".tmp")] == []


def test_keys_cannot_escape_the_root(tmp_path: Path) -> None:
    """Keys with .. or a leading slash are refused."""
    store = LocalBlobStore(tmp_path / "root")
    for key in ("../x", "/etc/passwd", "a//b", ""):
        with pytest.raises(InvalidArgument):
            store.put(key, b"x", "text/plain")


def test_open_blob_store_picks_by_url(tmp_path: Path) -> None:
    """A path opens a local store; unknown schemes and bucketless s3 URLs are refused."""
    assert isinstance(open_blob_store(str(tmp_path), BlobSettings()), LocalBlobStore)
    with pytest.raises(ConfigError, match="unsupported scheme"):
        open_blob_store("gs://bucket", BlobSettings())
    with pytest.raises(ConfigError, match="names no bucket"):
        open_blob_store("s3://", BlobSettings())
