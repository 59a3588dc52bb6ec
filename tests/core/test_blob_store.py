"""The local blob store (the S3 one shares its interface and is exercised against a real server)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lookalike.core.blob_store import LocalBlobStore, _temp_prefix, open_blob_store
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
    """Keys with .. or a leading slash are refused, and so are temp-file names."""
    store = LocalBlobStore(tmp_path / "root")
    for key in ("../x", "/etc/passwd", "a//b", "", "thumbs/.tmp-x"):
        with pytest.raises(InvalidArgument):
            store.put(key, b"x", "text/plain")


def test_open_blob_store_picks_by_url(tmp_path: Path) -> None:
    """A path opens a local store; unknown schemes and bucketless s3 URLs are refused."""
    assert isinstance(open_blob_store(str(tmp_path), BlobSettings()), LocalBlobStore)
    with pytest.raises(ConfigError, match="unsupported scheme"):
        open_blob_store("gs://bucket", BlobSettings())
    with pytest.raises(ConfigError, match="names no bucket"):
        open_blob_store("s3://", BlobSettings())


# A writer that stops for good between writing its temp file and moving it into place.
STALLED_WRITER = """
import os, sys, time
from pathlib import Path
from lookalike.core.blob_store import LocalBlobStore
os.replace = lambda src, dst: time.sleep(600)
LocalBlobStore(Path(sys.argv[1])).put("thumbs/abc.jpg", b"x" * 1000, "image/jpeg")
"""


def _temp_files(root: Path) -> list[Path]:
    return sorted(root.rglob(".tmp-*"))


def test_a_live_writers_temp_file_is_kept_and_a_killed_ones_removed(tmp_path: Path) -> None:
    """Another process's temp file survives cleaning while it runs and goes once it is SIGKILLed."""
    store = LocalBlobStore(tmp_path)
    store.put("thumbs/kept.jpg", b"blob", "image/jpeg")
    writer = subprocess.Popen([sys.executable, "-c", STALLED_WRITER, str(tmp_path)])
    try:
        deadline = time.monotonic() + 60
        while not [p for p in _temp_files(tmp_path) if p.stat().st_size == 1000]:
            assert writer.poll() is None, "the writer exited"
            assert time.monotonic() < deadline, "the writer never wrote"
            time.sleep(0.02)
        [temp] = _temp_files(tmp_path)
        assert f"-{writer.pid}-" in temp.name
        assert store.clean_interrupted(abandoned_after_s=3600) == 0
        assert temp.exists()
        writer.kill()
        writer.wait(timeout=30)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert store.clean_interrupted(abandoned_after_s=3600) == 1
    assert _temp_files(tmp_path) == []
    assert store.get("thumbs/kept.jpg") == b"blob"
    assert not store.exists("thumbs/abc.jpg")


def test_temp_files_of_unknown_writers_are_removed_once_older_than_the_threshold(
    tmp_path: Path,
) -> None:
    """Temp files of other machines, of unnamed writers, even of this live process go once old."""
    store = LocalBlobStore(tmp_path)
    store.put("images/abc.jpg", b"blob", "image/jpeg")
    (tmp_path / "images" / ".hidden").write_bytes(b"not a temp file")
    names = [
        ".tmp-otherhost-0123456789ab-4242-abcd1234",  # another machine's writer
        ".tmp-k3j2h1g0",  # a writer that left no name (older releases)
        f".tmp-elsewhere-{'f' * 12}-{os.getpid()}-k3j2h1g0",  # a live PID, of another machine
        f"{_temp_prefix()}k3j2h1g0",  # this process's own
    ]
    for name in names:
        (tmp_path / "images" / name).write_bytes(b"partial")
    assert store.clean_interrupted(abandoned_after_s=3600) == 0
    assert len(_temp_files(tmp_path)) == 4
    old = time.time() - 7200
    for name in names:
        os.utime(tmp_path / "images" / name, (old, old))
    assert store.clean_interrupted(abandoned_after_s=7300) == 0
    assert store.clean_interrupted(abandoned_after_s=3600) == 4
    assert _temp_files(tmp_path) == []
    assert store.get("images/abc.jpg") == b"blob"
    assert (tmp_path / "images" / ".hidden").exists()
