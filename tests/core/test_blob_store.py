"""The local blob store (the S3 one shares its interface and is exercised against a real server)."""

from __future__ import annotations

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
