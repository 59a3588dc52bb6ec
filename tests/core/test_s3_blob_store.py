"""The S3 blob store against a real S3-compatible server (SeaweedFS) on 127.0.0.1."""

from __future__ import annotations

import time
import urllib.request
import uuid

import pytest

from lookalike.core.blob_store import S3BlobStore, open_blob_store
from lookalike.core.errors import NotFound, StoreUnavailable
from lookalike.core.settings import BlobSettings
from tests.conftest import S3Server


def test_round_trip_with_prefix_and_presigned_url(s3_server: S3Server) -> None:
    """The bucket is created; blobs round-trip under the prefix; a presigned URL serves them."""
    bucket = f"lk-{uuid.uuid4().hex[:12]}"
    store = open_blob_store(f"s3://{bucket}/collection-a", s3_server.settings)
    assert isinstance(store, S3BlobStore)
    store.put("images/abc.jpg", b"\xff\xd8jpeg bytes", "image/jpeg")
    assert store.exists("images/abc.jpg")
    assert store.get("images/abc.jpg") == b"\xff\xd8jpeg bytes"
    url = store.presigned_url("images/abc.jpg", 60)
    assert url is not None
    assert f"/{bucket}/collection-a/images/abc.jpg" in url
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"\xff\xd8jpeg bytes"
    assert not store.create("images/abc.jpg", b"other", "image/jpeg")
    assert store.get("images/abc.jpg") == b"\xff\xd8jpeg bytes"
    store.delete("images/abc.jpg")
    assert not store.exists("images/abc.jpg")
    with pytest.raises(NotFound, match=r"images/abc\.jpg"):
        store.get("images/abc.jpg")
    assert store.create("images/abc.jpg", b"new", "image/jpeg")
    assert store.get("images/abc.jpg") == b"new"


def test_unreachable_endpoint_fails_at_once_with_a_clear_error() -> None:
    """An S3 endpoint that does not answer is reported when the store is opened."""
    settings = BlobSettings(endpoint="127.0.0.1:9", region="us-east-1")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"bucket 'images' is unreachable"):
        open_blob_store("s3://images", settings)
    assert time.monotonic() - started < 30
