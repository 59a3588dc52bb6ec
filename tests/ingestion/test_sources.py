"""Sources: folders, list files of paths and URLs, tar shards, S3 prefixes."""

from __future__ import annotations

import io
import os
import socket
import tarfile
import threading
import time
import uuid
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lookalike.core.errors import ConfigError, StoreUnavailable
from lookalike.core.settings import BlobSettings
from lookalike.ingestion.sources import NotRead, RefusedItem, folder_items, open_source
from tests.conftest import S3Server, free_port


def test_recursive_sorted_with_parent_folder_as_label(tmp_path: Path) -> None:
    """Images are found recursively in a stable order, labelled by their folder."""
    for rel in ("cats/a.jpg", "cats/deep/b.PNG", "dogs/c.webp", "top.jpg", "notes.txt",
                ".hidden/d.jpg", "dogs/.e.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    items = list(folder_items(tmp_path))
    assert [(Path(i.source).relative_to(tmp_path).as_posix(), i.label) for i in items] == [
        ("top.jpg", ""), ("cats/a.jpg", "cats"), ("cats/deep/b.PNG", "deep"),
        ("dogs/c.webp", "dogs"),
    ]


def test_links_outside_the_root_are_not_followed(tmp_path: Path) -> None:
    """A symlinked folder or file pointing outside the root is not read but listed as refused,
    with its reason; one inside is kept, and a link back up the tree is not walked again."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(b"x")
    root = tmp_path / "root"
    (root / "inner").mkdir(parents=True)
    (root / "inner" / "ok.jpg").write_bytes(b"x")
    os.symlink(outside, root / "escape")
    os.symlink(outside / "secret.jpg", root / "escape.jpg")
    os.symlink(root / "inner", root / "alias")
    os.symlink(root, root / "inner" / "up")
    items = list(folder_items(root))
    names = sorted(Path(i.source).relative_to(root).as_posix() for i in items)
    assert names == ["alias/ok.jpg", "escape", "escape.jpg", "inner/ok.jpg"]
    refused = [i for i in items if isinstance(i, RefusedItem)]
    assert sorted(Path(i.source).name for i in refused) == ["escape", "escape.jpg"]
    for item in refused:
        assert item.reason == f"a link leading outside {root}: not followed"
        with pytest.raises(NotRead, match="not followed"):
            item.read()


def test_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    """Pointing at something that is not a folder says so."""
    with pytest.raises(ConfigError, match="is not a folder"):
        list(folder_items(tmp_path / "nope"))


def http_server(root: Path) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """A static file server for `root` on 127.0.0.1 (the caller shuts it down)."""
    handler = partial(_QuietHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Keep test output clean."""


def test_list_file_of_paths_and_urls(tmp_path: Path) -> None:
    """A list mixes relative paths and http URLs (fetched from a local server); a 404 is an item error."""
    (tmp_path / "web" / "cats").mkdir(parents=True)
    (tmp_path / "web" / "cats" / "a.jpg").write_bytes(b"web bytes")
    (tmp_path / "local" / "dogs").mkdir(parents=True)
    (tmp_path / "local" / "dogs" / "b.jpg").write_bytes(b"local bytes")
    server, thread = http_server(tmp_path / "web")
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        listing = tmp_path / "local" / "list.txt"
        listing.write_text(f"# comment\n{base}/cats/a.jpg\n\ndogs/b.jpg\n{base}/missing.jpg\n")
        items = list(open_source(str(listing), BlobSettings(), fetch_timeout_s=5))
        assert [(i.source, i.label) for i in items] == [
            (f"{base}/cats/a.jpg", "cats"),
            (str((tmp_path / "local" / "dogs" / "b.jpg").absolute()), "dogs"),
            (f"{base}/missing.jpg", ""),
        ]
        assert items[0].read() == b"web bytes"
        assert items[1].read() == b"local bytes"
        with pytest.raises(OSError, match="404"):
            items[2].read()
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_url_that_does_not_answer_times_out(tmp_path: Path) -> None:
    """An http server that accepts but never answers is an OSError after the fetch timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/x.jpg"
        (tmp_path / "urls.txt").write_text(url + "\n")
        (item,) = list(open_source(str(tmp_path / "urls.txt"), BlobSettings(), 0.5))
        started = time.monotonic()
        with pytest.raises(OSError, match="timed out"):
            item.read()
        assert time.monotonic() - started < 5


def test_tar_shards_one_image_per_member(tmp_path: Path) -> None:
    """Each image member of each shard (a glob picks shards) is an item labelled by its folder."""
    for shard, names in (("s-000.tar", ["cats/a.jpg", "notes.txt"]),
                         ("s-001.tar.gz", ["dogs/b.png", "c.webp"])):
        with (tarfile.open(tmp_path / shard, "w:gz") if shard.endswith("gz")
              else tarfile.open(tmp_path / shard, "w")) as archive:
            for name in names:
                info = tarfile.TarInfo(name)
                data = f"bytes of {name}".encode()
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    items = list(open_source(str(tmp_path / "s-*.tar*"), BlobSettings(), 5))
    prefix = f"{tmp_path.absolute()}/"
    assert [(i.source.removeprefix(prefix), i.label, i.read()) for i in items] == [
        ("s-000.tar#cats/a.jpg", "cats", b"bytes of cats/a.jpg"),
        ("s-001.tar.gz#dogs/b.png", "dogs", b"bytes of dogs/b.png"),
        ("s-001.tar.gz#c.webp", "", b"bytes of c.webp"),
    ]


def test_s3_prefix_lists_lazily_and_fetches_on_read(s3_server: S3Server) -> None:
    """Objects under s3://bucket/prefix are items; keys outside the prefix and non-images are not."""
    from minio import Minio

    bucket = f"src-{uuid.uuid4().hex[:12]}"
    client = Minio(s3_server.endpoint, access_key="lookalike", secret_key="lookalike-secret",
                   secure=False, region="us-east-1")
    client.make_bucket(bucket)
    for key in ("photos/cats/a.jpg", "photos/b.png", "photos/readme.md", "other/c.jpg",
                "photos-old/d.jpg"):
        data = key.encode()
        client.put_object(bucket, key, io.BytesIO(data), len(data))
    items = open_source(f"s3://{bucket}/photos", s3_server.settings, 5)
    assert [(i.source, i.label, i.read()) for i in items] == [
        (f"s3://{bucket}/photos/b.png", "", b"photos/b.png"),
        (f"s3://{bucket}/photos/cats/a.jpg", "cats", b"photos/cats/a.jpg"),
    ]
    with pytest.raises(ConfigError, match="does not exist"):
        open_source(f"s3://{bucket}-missing/x", s3_server.settings, 5)


def test_unreachable_s3_source_fails_when_opened() -> None:
    """An S3 source whose endpoint does not answer is an error before anything is iterated."""
    settings = BlobSettings(endpoint=f"127.0.0.1:{free_port()}", region="us-east-1")
    with pytest.raises(StoreUnavailable, match="unreachable"):
        open_source("s3://bucket/prefix", settings, 5)


def test_open_source_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    """A missing path or a file of another kind is a clear error."""
    with pytest.raises(ConfigError, match="does not exist"):
        open_source(str(tmp_path / "nope"), BlobSettings(), 5)
    (tmp_path / "photo.jpg").write_bytes(b"x")
    with pytest.raises(ConfigError, match="not a folder, s3"):
        open_source(str(tmp_path / "photo.jpg"), BlobSettings(), 5)
