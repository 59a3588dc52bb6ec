"""Where images come from: each source yields items lazily, in a stable order.

An item is `(key, bytes)` read on demand: its `source` (path, s3:// key or URL), a `label`, and
`read()`. Sources: a folder, an S3/MinIO prefix, a text file of paths or URLs, tar shards; and
for a re-index, the originals a collection stored (StoredItem).
`open_source` picks one by the form of its argument.
"""

from __future__ import annotations

import glob
import os
import tarfile
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlparse

from lookalike.core.blob_store import BlobStore, minio_client, s3_transport_errors
from lookalike.core.errors import ConfigError, NotFound, StoreUnavailable
from lookalike.core.paths import read_exact
from lookalike.core.schemas import ImageMeta
from lookalike.core.settings import BlobSettings
from lookalike.ingestion.retry import RetryPolicy, with_retry

if TYPE_CHECKING:
    from minio import Minio

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
)
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
LIST_SUFFIXES = (".txt", ".lst", ".list", ".csv")


class Item(Protocol):
    """One image to ingest: where it came from, its label, and how to read its bytes."""

    @property
    def source(self) -> str:
        """Path, s3:// address or URL, as reported and stored."""
        ...

    @property
    def label(self) -> str:
        """Optional class (e.g. the parent folder's name)."""
        ...

    def read(self) -> bytes:
        """The image's bytes; raises OSError when they cannot be read."""
        ...


@dataclass(frozen=True, slots=True)
class SourceItem:
    """A file on disk: `source` as the user named it, `path` the file it resolved to when it
    was listed (read only if no link redirects it since)."""

    source: str
    label: str
    path: Path

    def read(self) -> bytes:
        """The file's bytes."""
        return read_exact(self.path)


@dataclass(frozen=True, slots=True)
class RefusedItem:
    """A name the source lists but does not read (a link leading outside the folder), so that
    the run reports it with its reason instead of passing over it in silence."""

    source: str
    label: str
    reason: str

    def read(self) -> bytes:
        """Never any bytes: raises NotRead with the reason."""
        raise NotRead(self.reason)


class NotRead(OSError):
    """An item the source refused to read; its message is the whole reason."""


@dataclass(frozen=True, slots=True)
class FetchedItem:
    """An item whose bytes come from a callable (an S3 GET, an http fetch, a tar member)."""

    source: str
    label: str
    fetch: Callable[[], bytes]

    def read(self) -> bytes:
        """The bytes, fetched now."""
        return self.fetch()


@dataclass(frozen=True, slots=True)
class StoredItem:
    """An image a collection stores: its original, read back from `blobs` by its blob_key, and
    the metadata it keeps (the pipeline builds none for it)."""

    meta: ImageMeta
    blobs: BlobStore
    retry: RetryPolicy

    @property
    def source(self) -> str:
        """The original's key in the blob store."""
        return self.meta.blob_key

    @property
    def label(self) -> str:
        """The stored label."""
        return self.meta.label

    def read(self) -> bytes:
        """The original's bytes, retried while the blob store is down; NotRead when it is gone."""
        key = self.meta.blob_key
        try:
            return with_retry(lambda: self.blobs.get(key), f"blob get of {key}", self.retry)
        except NotFound:
            raise NotRead("blob missing from the blob store") from None


def _is_image_name(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and Path(base).suffix.lower() in IMAGE_SUFFIXES


def _label_of(key: str) -> str:
    parts = key.strip("/").split("/")
    return parts[-2] if len(parts) > 1 else ""


def folder_items(root: Path) -> Iterator[SourceItem | RefusedItem]:
    """Image files under `root`, recursively, sorted; the parent folder's name is the label.

    Hidden files and folders are skipped. Links are followed inside `root` (never back into a
    folder they lie in, which would walk forever); a link that leads outside `root` (to a
    folder, or an image name) is never followed and comes out as a RefusedItem, so the run
    reports it.
    """
    if not root.is_dir():
        raise ConfigError(f"{root} is not a folder")
    resolved_root = root.resolve()
    # The resolved folders on the way down to each folder walked.
    chains: dict[Path, tuple[Path, ...]] = {root: (resolved_root,)}
    refusal = f"a link leading outside {root}: not followed"
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        current = Path(dirpath)
        chain = chains.pop(current)
        label = current.name if current != root else ""
        kept = []
        for name in sorted(d for d in dirnames if not d.startswith(".")):
            resolved = (current / name).resolve()
            if not resolved.is_relative_to(resolved_root):
                yield RefusedItem(str((current / name).absolute()), name, refusal)
            elif resolved not in chain:
                chains[current / name] = (*chain, resolved)
                kept.append(name)
        dirnames[:] = kept
        for name in sorted(filenames):
            path = current / name
            if name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            resolved = path.resolve()
            if resolved.is_relative_to(resolved_root):
                yield SourceItem(source=str(path.absolute()), label=label, path=resolved)
            else:
                yield RefusedItem(str(path.absolute()), label, refusal)


def fetch_url(url: str, timeout_s: float) -> bytes:
    """GET `url` with a timeout; raises OSError (URLError, HTTPError, timeouts) on failure."""
    request = urllib.request.Request(url, headers={"User-Agent": "lookalike-ingest"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return bytes(response.read())


def list_items(list_file: Path, timeout_s: float) -> Iterator[FetchedItem | SourceItem]:
    """One item per non-blank line of `list_file`: a local path or an http(s) URL.

    Relative paths are relative to the list's folder; lines starting with `#` are comments.
    The label is the parent folder's name (of the path, or of the URL's path).
    """
    if not list_file.is_file():
        raise ConfigError(f"{list_file} is not a file")
    with list_file.open(encoding="utf-8") as lines:
        for raw in lines:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            scheme = urlparse(line).scheme
            if scheme in ("http", "https"):
                yield FetchedItem(
                    source=line, label=_label_of(urlparse(line).path),
                    fetch=partial(fetch_url, line, timeout_s),
                )
            else:
                path = Path(line)
                if not path.is_absolute():
                    path = list_file.parent / path
                yield SourceItem(source=str(path.absolute()), label=path.parent.name,
                                 path=path.resolve())


def _read_member(archive: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    extracted = archive.extractfile(member)
    if extracted is None:
        raise OSError(f"tar member {member.name!r} has no data")
    with extracted:
        return extracted.read()


def _constant(data: bytes) -> Callable[[], bytes]:
    return lambda: data


def tar_items(shards: list[Path]) -> Iterator[FetchedItem]:
    """One item per image member of each tar shard, read sequentially (streamable archives).

    The source is `<shard>#<member>`; the label is the member's parent folder name.
    """
    for shard in shards:
        try:
            archive = tarfile.open(shard, mode="r|*")  # noqa: SIM115 (closed by `with` below)
        except (OSError, tarfile.TarError) as exc:
            raise ConfigError(f"cannot open tar shard {shard}: {exc}") from exc
        with archive:
            for member in archive:
                if not member.isfile() or not _is_image_name(member.name):
                    continue
                # A stream archive must be read member by member, so the bytes are read here.
                data = _read_member(archive, member)
                yield FetchedItem(
                    source=f"{shard.absolute()}#{member.name}", label=_label_of(member.name),
                    fetch=_constant(data),
                )


def s3_items(url: str, settings: BlobSettings) -> Iterator[FetchedItem]:
    """Image objects under `s3://bucket/prefix`, listed recursively (lazily) and fetched on read.

    Uses the blob settings' endpoint and keys. Checked when called, not when first iterated:
    an unreachable endpoint raises StoreUnavailable and a missing bucket ConfigError at once.
    """
    parsed = urlparse(url)
    bucket, folder = parsed.netloc, parsed.path.strip("/")
    # The prefix is a folder: s3://b/photos lists photos/..., not photos-old/...
    prefix = f"{folder}/" if folder else ""
    if not bucket:
        raise ConfigError(f"source {url!r} names no bucket (expected s3://bucket[/prefix])")
    client = minio_client(settings)
    transport = s3_transport_errors()
    try:
        if not client.bucket_exists(bucket):
            raise ConfigError(f"source bucket {bucket!r} does not exist at {settings.endpoint}")
    except transport as exc:
        raise StoreUnavailable(f"S3 source {url!r} is unreachable: {exc}") from exc
    return _s3_listing(client, bucket, prefix, url)


def _s3_listing(client: Minio, bucket: str, prefix: str, url: str) -> Iterator[FetchedItem]:
    transport = s3_transport_errors()

    def get(name: str) -> bytes:
        try:
            response = client.get_object(bucket, name)
        except transport as exc:
            raise OSError(f"S3 get failed: {exc}") from exc
        try:
            return bytes(response.read())
        finally:
            response.close()
            response.release_conn()

    try:
        for obj in client.list_objects(bucket, prefix=prefix, recursive=True):
            name = obj.object_name
            if name is None or obj.is_dir or not _is_image_name(name):
                continue
            relative = name[len(prefix):]
            yield FetchedItem(
                source=f"s3://{bucket}/{name}", label=_label_of(relative),
                fetch=partial(get, name),
            )
    except transport as exc:
        raise StoreUnavailable(f"listing S3 source {url!r} failed: {exc}") from exc


def _tar_shards(argument: str) -> list[Path] | None:
    if any(c in argument for c in "*?["):
        shards = sorted(Path(p) for p in glob.glob(argument))
        if not shards:
            raise ConfigError(f"no tar shards match {argument!r}")
        if not all(p.name.lower().endswith(TAR_SUFFIXES) for p in shards):
            raise ConfigError(f"{argument!r} matches files that are not tar shards")
        return shards
    if argument.lower().endswith(TAR_SUFFIXES):
        return [Path(argument)]
    return None


def open_source(
    argument: str, blob_settings: BlobSettings, fetch_timeout_s: float
) -> Iterator[Item]:
    """The source an argument names, by its form.

    `s3://bucket/prefix`: an S3/MinIO prefix; `*.tar` (also `.tar.gz`, globs like
    `shards/*.tar`): tar shards; a `.txt`/`.lst` file: a list of paths or URLs; a folder: the
    folder, recursively.
    """
    if argument.startswith("s3://"):
        return s3_items(argument, blob_settings)
    if (shards := _tar_shards(argument)) is not None:
        for shard in shards:
            if not shard.is_file():
                raise ConfigError(f"tar shard {shard} does not exist")
        return tar_items(shards)
    path = Path(argument)
    if path.is_dir():
        return folder_items(path)
    if path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
        return list_items(path, fetch_timeout_s)
    if not path.exists():
        raise ConfigError(f"source {argument!r} does not exist")
    raise ConfigError(
        f"source {argument!r} is not a folder, s3://bucket/prefix, tar shard or list file "
        f"({', '.join(LIST_SUFFIXES)})"
    )
