"""`lookalike ingest` picks the source (tar shards, URL lists, S3 prefixes) by the argument's form."""

from __future__ import annotations

import io
import tarfile
import uuid
from pathlib import Path

import pytest

from lookalike import cli
from lookalike.app.compose import blobs_from, embedder_from, store_from
from lookalike.core.ids import content_id
from lookalike.core.settings import Settings
from tests.conftest import S3Server, encode, gradient_image
from tests.ingestion.test_sources import http_server


def test_ingest_a_tar_shard_then_a_url_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Members of a shard and URLs of a list end up stored with their sources and labels."""
    monkeypatch.setenv("LOOKALIKE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LOOKALIKE_MODEL__BACKBONE", "efficientnet_lite0")
    shard = tmp_path / "part-000.tar"
    with tarfile.open(shard, "w") as archive:
        for seed in (1, 2):
            data = encode(gradient_image(40, 30, seed=seed))
            info = tarfile.TarInfo(f"cats/{seed}.jpg")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    web = tmp_path / "web" / "dogs"
    web.mkdir(parents=True)
    (web / "3.jpg").write_bytes(encode(gradient_image(40, 30, seed=3)))
    assert cli.main(["ingest", str(shard), "--no-progress"]) == cli.EXIT_OK
    server, thread = http_server(tmp_path / "web")
    try:
        url = f"http://127.0.0.1:{server.server_port}/dogs/3.jpg"
        (tmp_path / "urls.txt").write_text(url + "\n")
        assert cli.main(["ingest", str(tmp_path / "urls.txt"), "--no-progress"]) == cli.EXIT_OK
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert "ingesting 1 images from" in capsys.readouterr().out
    settings = Settings()
    store = store_from(settings, embedder_from(settings))
    assert store.count() == 3
    meta = store.get([content_id((web / "3.jpg").read_bytes())[0]])[0]
    assert meta is not None
    assert (meta.source, meta.label) == (url, "dogs")
    member = store.get([content_id(encode(gradient_image(40, 30, seed=1)))[0]])[0]
    assert member is not None
    assert (member.source, member.label) == (f"{shard.absolute()}#cats/1.jpg", "cats")


def test_ingest_an_s3_prefix_into_s3_blobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_server: S3Server
) -> None:
    """Images under s3://bucket/prefix are ingested, with the blobs in another S3 bucket."""
    from minio import Minio

    source_bucket, blob_bucket = (f"lk-{uuid.uuid4().hex[:10]}" for _ in range(2))
    client = Minio(s3_server.endpoint, access_key="lookalike", secret_key="lookalike-secret",
                   secure=False, region="us-east-1")
    client.make_bucket(source_bucket)
    images = {f"in/birds/{seed}.jpg": encode(gradient_image(40, 30, seed=seed)) for seed in (4, 5)}
    for key, data in images.items():
        client.put_object(source_bucket, key, io.BytesIO(data), len(data))
    for name, value in (("DATA_DIR", str(tmp_path / "data")),
                        ("MODEL__BACKBONE", "efficientnet_lite0"),
                        ("BLOBS__URL", f"s3://{blob_bucket}"),
                        ("BLOBS__ENDPOINT", s3_server.endpoint),
                        ("BLOBS__ACCESS_KEY", "lookalike"),
                        ("BLOBS__SECRET_KEY", "lookalike-secret"),
                        ("BLOBS__REGION", "us-east-1")):
        monkeypatch.setenv(f"LOOKALIKE_{name}", value)
    assert cli.main(["ingest", f"s3://{source_bucket}/in", "--no-progress"]) == cli.EXIT_OK
    settings = Settings()
    store = store_from(settings, embedder_from(settings))
    blobs = blobs_from(settings)
    for key, data in images.items():
        meta = store.get([content_id(data)[0]])[0]
        assert meta is not None
        assert (meta.source, meta.label) == (f"s3://{source_bucket}/{key}", "birds")
        assert blobs.get(meta.blob_key) == data
