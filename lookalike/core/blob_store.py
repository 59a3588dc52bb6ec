"""Image blobs: a local directory (embedded default) or an S3/MinIO bucket, one interface."""

from __future__ import annotations

import functools
import hashlib
import io
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from lookalike.core.errors import ConfigError, InvalidArgument, NotFound, StoreUnavailable
from lookalike.core.settings import BlobSettings


class BlobStore(Protocol):
    """Content-addressed blob storage."""

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Store `data` under `key`, replacing what was there."""
        ...

    def create(self, key: str, data: bytes, content_type: str) -> bool:
        """Store `data` under `key` only if nothing is there; whether this call stored it."""
        ...

    def get(self, key: str) -> bytes:
        """The bytes under `key`; raises NotFound."""
        ...

    def exists(self, key: str) -> bool:
        """Whether `key` is stored."""
        ...

    def delete(self, key: str) -> None:
        """Remove `key`; removing a missing key is not an error."""
        ...

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        """A time-limited GET URL, or None where the store cannot give one."""
        ...

    def ping(self) -> None:
        """Raise StoreUnavailable when the store cannot be reached."""
        ...

    def clean_interrupted(self, abandoned_after_s: float) -> int:
        """Remove what writes interrupted by a crash or a kill left behind; how many.

        A write still running is left alone unless it has run for over `abandoned_after_s`.
        Raises StoreUnavailable when the store cannot be listed or cleaned.
        """
        ...


# Every temporary file of a local write is named `.tmp-<host>-<machine>-<pid>-<random>`: who
# wrote it, so cleaning can tell a live writer's file from a killed one's.
TEMP_PREFIX = ".tmp-"


@functools.cache
def _machine_tag() -> str:
    """This host, boot and PID namespace, hashed: the PIDs of temp names it shares can be checked.

    A hostname alone is not enough: containers sharing the host's name (host networking) or
    two machines both called `localhost` see different processes under the same PIDs.
    """
    identity = [socket.gethostname()]
    try:
        identity.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
        identity.append(os.readlink("/proc/self/ns/pid"))
    except OSError:  # no /proc (macOS): the hostname is all there is
        pass
    return hashlib.sha256("\0".join(identity).encode()).hexdigest()[:12]


def _temp_prefix() -> str:
    """The name prefix of this process's temporary files (mkstemp adds a random part without '-')."""
    host = "".join(c if c.isalnum() or c in "._" else "_" for c in socket.gethostname())
    return f"{TEMP_PREFIX}{host}-{_machine_tag()}-{os.getpid()}-"


def _is_alive(pid: int) -> bool:
    """Whether a process with this PID runs (in this PID namespace)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _abandoned(name: str, mtime: float, now: float, abandoned_after_s: float) -> bool:
    """Whether the temporary file `name` was left by a writer that will not finish it: one of
    this machine's processes that has exited, or anyone's once older than `abandoned_after_s`."""
    if now - mtime > abandoned_after_s:
        return True
    fields = name[len(TEMP_PREFIX):].rsplit("-", 3)
    if len(fields) != 4 or fields[1] != _machine_tag() or not fields[2].isdigit():
        # Another machine's (or a name without a writer): only its age tells.
        return False
    return not _is_alive(int(fields[2]))


def _temp_files(root: Path) -> Iterator[os.DirEntry[str]]:
    """The temporary files under `root`, found by name alone (no stat of the blobs)."""
    with os.scandir(root) as entries:
        for entry in entries:
            if entry.name.startswith(TEMP_PREFIX):
                if entry.is_file(follow_symlinks=False):
                    yield entry
            elif entry.is_dir(follow_symlinks=False):
                yield from _temp_files(Path(entry.path))


def write_file(path: Path, data: bytes) -> None:
    """Write `path` atomically: a crash never leaves a half-written file under its name."""
    _place(path, data, os.replace)


def _place(path: Path, data: bytes, move: Callable[[str, Path], None]) -> None:
    """Write `data` to a temporary file beside `path`, then `move` it there (replace or link)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix())
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        move(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise InvalidArgument(f"invalid blob key {key!r}")
    if parts[-1].startswith(TEMP_PREFIX):
        # Cleaning takes such names for leftovers of interrupted writes.
        raise InvalidArgument(f"invalid blob key {key!r}: names starting {TEMP_PREFIX!r} are reserved")
    return key


class LocalBlobStore:
    """Blobs as files under a root directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        write_file(self._path(key), data)

    def create(self, key: str, data: bytes, content_type: str) -> bool:
        try:
            # A hard link fails on an existing name: atomic create-if-absent of a complete file.
            _place(self._path(key), data, os.link)
        except FileExistsError:
            return False
        return True

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"blob {key!r} not found under {self.root}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        return None

    def ping(self) -> None:
        if not self.root.is_dir():
            raise StoreUnavailable(f"blob directory {self.root} does not exist")

    def clean_interrupted(self, abandoned_after_s: float) -> int:
        removed = 0
        now = time.time()
        try:
            for entry in _temp_files(self.root):
                try:
                    if _abandoned(entry.name, entry.stat().st_mtime, now, abandoned_after_s):
                        os.unlink(entry.path)
                        removed += 1
                except FileNotFoundError:  # its writer finished, or another cleaner was first
                    pass
        except OSError as exc:
            raise StoreUnavailable(f"cleaning {self.root} failed: {exc}") from exc
        return removed


def s3_transport_errors() -> tuple[type[Exception], ...]:
    """What the minio SDK raises when S3 cannot be reached or answers with an error."""
    from minio.error import MinioException
    from urllib3.exceptions import HTTPError

    return (MinioException, OSError, HTTPError)


def minio_client(settings: BlobSettings) -> Any:
    """A `minio.Minio` client for the configured endpoint and keys."""
    import urllib3
    from minio import Minio

    return Minio(
        settings.endpoint,
        access_key=settings.access_key.get_secret_value() or None,
        secret_key=settings.secret_key.get_secret_value() or None,
        secure=settings.secure,
        region=settings.region,
        # Few, quick retries: an unreachable endpoint is reported in seconds, not minutes.
        http_client=urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=5.0, read=60.0),
            retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)),
            maxsize=16,
        ),
    )


class S3BlobStore:
    """Blobs in an S3/MinIO bucket through the `minio` SDK; the bucket is created if missing."""

    def __init__(self, bucket: str, prefix: str, settings: BlobSettings) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client = minio_client(settings)
        self._ensure_bucket()

    def _object(self, key: str) -> str:
        key = _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _ensure_bucket(self) -> None:
        try:
            if not self._client.bucket_exists(self.bucket):
                self._client.make_bucket(self.bucket)
        except s3_transport_errors() as exc:
            raise StoreUnavailable(f"S3 bucket {self.bucket!r} is unreachable: {exc}") from exc

    def put(self, key: str, data: bytes, content_type: str) -> None:
        try:
            self._client.put_object(
                self.bucket, self._object(key), io.BytesIO(data), len(data),
                content_type=content_type,
            )
        except s3_transport_errors() as exc:
            raise StoreUnavailable(f"S3 put of {key!r} failed: {exc}") from exc

    def create(self, key: str, data: bytes, content_type: str) -> bool:
        # The minio SDK sends no conditional PUT (If-None-Match), so this is check-then-put:
        # two writers can both see the key free. Callers that race (the model registry) read
        # their write back.
        if self.exists(key):
            return False
        self.put(key, data, content_type)
        return True

    def get(self, key: str) -> bytes:
        from minio.error import S3Error

        try:
            response = self._client.get_object(self.bucket, self._object(key))
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                raise NotFound(f"blob {key!r} not found in bucket {self.bucket!r}") from None
            raise StoreUnavailable(f"S3 get of {key!r} failed: {exc}") from exc
        except s3_transport_errors() as exc:
            raise StoreUnavailable(f"S3 get of {key!r} failed: {exc}") from exc
        try:
            return bytes(response.read())
        finally:
            response.close()
            response.release_conn()

    def exists(self, key: str) -> bool:
        from minio.error import S3Error

        try:
            self._client.stat_object(self.bucket, self._object(key))
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                return False
            raise StoreUnavailable(f"S3 stat of {key!r} failed: {exc}") from exc
        except s3_transport_errors() as exc:
            raise StoreUnavailable(f"S3 stat of {key!r} failed: {exc}") from exc
        return True

    def delete(self, key: str) -> None:
        try:
            self._client.remove_object(self.bucket, self._object(key))
        except s3_transport_errors() as exc:
            raise StoreUnavailable(f"S3 delete of {key!r} failed: {exc}") from exc

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        return str(
            self._client.presigned_get_object(
                self.bucket, self._object(key), expires=timedelta(seconds=expires_s)
            )
        )

    def ping(self) -> None:
        self._ensure_bucket()

    def clean_interrupted(self, abandoned_after_s: float) -> int:
        # A put over the SDK's part size (5 MiB) is a multipart upload; a killed writer leaves it
        # incomplete, its parts stored (and billed) but invisible. S3 names no owner, so age
        # decides: one blob's upload never lasts `abandoned_after_s`.
        cutoff = datetime.now(UTC) - timedelta(seconds=abandoned_after_s)
        prefix = f"{self.prefix}/" if self.prefix else ""
        seen: set[str] = set()
        removed = 0
        try:
            while True:
                # Each round lists from the start: aborted uploads have left the listing and
                # kept ones are skipped, so it pages on without markers (SeaweedFS lists in
                # upload-id order, and its key markers skip uploads). Only a first page of 1000
                # running uploads would end it early. minio 7.2.20 has no public call for these.
                page = self._client._list_multipart_uploads(self.bucket, prefix=prefix)
                fresh = [u for u in page.uploads if u.upload_id not in seen]
                for upload in fresh:
                    seen.add(upload.upload_id)
                    if upload.initiated_time is not None and upload.initiated_time <= cutoff:
                        removed += self._abort(upload.object_name, upload.upload_id)
                if not page.is_truncated or not fresh:
                    return removed
        except s3_transport_errors() as exc:
            raise StoreUnavailable(
                f"cleaning interrupted uploads in bucket {self.bucket!r} failed: {exc}"
            ) from exc

    def _abort(self, object_name: str, upload_id: str) -> int:
        """Abort one multipart upload: 1, or 0 when it was completed or aborted meanwhile."""
        from minio.error import S3Error

        try:
            self._client._abort_multipart_upload(self.bucket, object_name, upload_id)
        except S3Error as exc:
            if exc.code == "NoSuchUpload":
                return 0
            raise
        return 1


def open_blob_store(url: str, settings: BlobSettings) -> BlobStore:
    """A blob store for `url`: `s3://bucket[/prefix]`, or a local directory path."""
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ConfigError(f"blob URL {url!r} names no bucket (expected s3://bucket[/prefix])")
        return S3BlobStore(parsed.netloc, parsed.path, settings)
    if parsed.scheme in ("", "file"):
        return LocalBlobStore(Path(parsed.path if parsed.scheme == "file" else url))
    raise ConfigError(f"blob URL {url!r}: unsupported scheme {parsed.scheme!r} (use s3:// or a path)")
