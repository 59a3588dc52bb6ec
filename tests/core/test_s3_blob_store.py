"""The S3 blob store against a real S3-compatible server (SeaweedFS) on 127.0.0.1."""

from __future__ import annotations

import time
import urllib.request
import uuid
from typing import Any

import pytest

from lookalike.core.blob_store import S3BlobStore, minio_client, open_blob_store
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


def _uploads(client: Any, bucket: str) -> list[str]:
    """The objects of the bucket's incomplete multipart uploads."""
    return sorted(u.object_name for u in client._list_multipart_uploads(bucket).uploads)


def test_clean_interrupted_aborts_old_multipart_uploads_under_the_prefix_only(
    s3_server: S3Server,
) -> None:
    """Incomplete uploads under the prefix are aborted once old; young or outside ones are kept."""
    bucket = f"lk-{uuid.uuid4().hex[:12]}"
    store = open_blob_store(f"s3://{bucket}/coll", s3_server.settings)
    big = bytes(range(256)) * (6 * 4096)  # 6 MiB: over the SDK's 5 MiB part, so multipart
    store.put("images/big.jpg", big, "image/jpeg")
    store.put("images/small.jpg", b"small", "image/jpeg")
    client = minio_client(s3_server.settings)
    assert _uploads(client, bucket) == []  # a completed put leaves none
    # What a writer killed mid-put leaves: an upload begun, one part sent, never completed.
    killed = client._create_multipart_upload(bucket, "coll/images/killed.jpg", {})
    client._upload_part(bucket, "coll/images/killed.jpg", big[: 5 << 20], None, killed, 1)
    for outside in ("coll-b/images/x.jpg", "other/images/y.jpg"):
        client._create_multipart_upload(bucket, outside, {})
    assert store.clean_interrupted(abandoned_after_s=3600) == 0
    time.sleep(3.0)
    client._create_multipart_upload(bucket, "coll/images/running.jpg", {})
    # S3 reports upload times in whole seconds: 2 s parts the 3 s old ones from the new one.
    assert store.clean_interrupted(abandoned_after_s=2.0) == 1
    assert _uploads(client, bucket) == [
        "coll-b/images/x.jpg", "coll/images/running.jpg", "other/images/y.jpg",
    ]
    assert sorted(o.object_name for o in client.list_objects(bucket, recursive=True)) == [
        "coll/images/big.jpg", "coll/images/small.jpg",
    ]
    assert store.get("images/big.jpg") == big
    assert not store.exists("images/killed.jpg")
