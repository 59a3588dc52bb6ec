"""The ingestion pipeline: read + hash + decode (threads) overlapping embed and writes.

Idempotent: ids come from content hashes and ids already stored are skipped with one vector-store
query per batch. A bad file never stops the run: it is reported with its reason. Blobs are written
before vectors, so a stored vector never points at a missing blob.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice

from PIL import Image
from tqdm import tqdm

from lookalike.core.blob_store import BlobStore
from lookalike.core.ids import content_id
from lookalike.core.schemas import ImageMeta, ImageRecord, image_key, thumb_key
from lookalike.core.vector_store import VectorStore
from lookalike.embedder.errors import ImageError
from lookalike.embedder.runtime import Embedder
from lookalike.ingestion.sources import SourceItem

_FORMAT_EXT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp",
               "TIFF": "tif", "MPO": "jpg"}
_CONTENT_TYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp",
                  "gif": "image/gif", "bmp": "image/bmp", "tif": "image/tiff"}


@dataclass(frozen=True, slots=True)
class Failure:
    """A file that was not ingested, and why."""

    source: str
    reason: str


@dataclass(slots=True)
class IngestReport:
    """What one run did."""

    seen: int = 0
    added: int = 0
    already_stored: int = 0
    duplicates: int = 0
    failed: list[Failure] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def images_per_s(self) -> float:
        """Files processed per second of wall time."""
        return self.seen / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class _Decoded:
    item: SourceItem
    meta: ImageMeta
    image: Image.Image
    data: bytes
    thumbnail: bytes


@dataclass(slots=True)
class _Prepared:
    decoded: list[_Decoded] = field(default_factory=list)
    already_stored: int = 0
    duplicates: int = 0
    failed: list[Failure] = field(default_factory=list)
    seen: int = 0


def _batches(items: Iterable[SourceItem], size: int) -> Iterator[list[SourceItem]]:
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


def thumbnail_jpeg(image: Image.Image, max_px: int) -> bytes:
    """A JPEG of `image` no larger than `max_px` on its longer side."""
    thumb = image.copy()
    thumb.thumbnail((max_px, max_px), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    thumb.save(out, format="JPEG", quality=85, optimize=True)
    return out.getvalue()


def detect_extension(data: bytes) -> str:
    """File extension for the image format of `data` (from its header)."""
    with Image.open(io.BytesIO(data)) as probe:
        return _FORMAT_EXT.get(str(probe.format), str(probe.format).lower())


class IngestPipeline:
    """Ingests source items into one collection; safe to run again on the same items."""

    def __init__(
        self,
        embedder: Embedder,
        store: VectorStore,
        blobs: BlobStore,
        *,
        batch_size: int,
        decode_workers: int,
        thumbnail_px: int,
    ) -> None:
        self.embedder = embedder
        self.store = store
        self.blobs = blobs
        self.batch_size = batch_size
        self.decode_workers = decode_workers
        self.thumbnail_px = thumbnail_px

    def run(
        self, items: Iterable[SourceItem], total: int | None = None, progress: bool = True
    ) -> IngestReport:
        """Ingest every item; never raises for a bad file, only for stores that fail."""
        report = IngestReport()
        self.embedder.load()
        started = time.perf_counter()
        bar = tqdm(total=total, unit="img", disable=not progress, dynamic_ncols=True)
        with ThreadPoolExecutor(self.decode_workers, thread_name_prefix="decode") as decoders, \
                ThreadPoolExecutor(1, thread_name_prefix="prepare") as preparer:
            # Batch i+1 is read and decoded while batch i is embedded and written; ids written
            # by this run are remembered because batch i+1 asked the store before they landed.
            written: set[int] = set()
            pending: Future[_Prepared] | None = None
            for batch in _batches(items, self.batch_size):
                upcoming = preparer.submit(self._prepare, batch, decoders)
                if pending is not None:
                    self._finish(pending.result(), report, bar, written)
                pending = upcoming
            if pending is not None:
                self._finish(pending.result(), report, bar, written)
        bar.close()
        report.seconds = time.perf_counter() - started
        return report

    def _prepare(self, batch: Sequence[SourceItem], decoders: ThreadPoolExecutor) -> _Prepared:
        prepared = _Prepared(seen=len(batch))
        loaded: dict[int, tuple[SourceItem, bytes, str]] = {}
        for item in batch:
            try:
                data = item.read()
            except OSError as exc:
                prepared.failed.append(Failure(item.source, f"cannot read file: {exc.strerror}"))
                continue
            image_id, digest = content_id(data)
            if image_id in loaded:
                prepared.duplicates += 1
                continue
            loaded[image_id] = (item, data, digest)
        existing = self.store.existing_ids(list(loaded))
        prepared.already_stored = len(existing)
        todo = [(i, *v) for i, v in loaded.items() if i not in existing]
        for result in decoders.map(lambda args: self._decode(*args), todo):
            if isinstance(result, Failure):
                prepared.failed.append(result)
            else:
                prepared.decoded.append(result)
        return prepared

    def _decode(
        self, image_id: int, item: SourceItem, data: bytes, digest: str
    ) -> _Decoded | Failure:
        try:
            image = self.embedder.decode(data)
            ext = detect_extension(data)
        except ImageError as exc:
            return Failure(item.source, str(exc))
        meta = ImageMeta(
            id=image_id, sha256=digest, blob_key=image_key(digest, ext), source=item.source,
            label=item.label, width=image.width, height=image.height,
            ingested_at=int(time.time()),
        )
        return _Decoded(item, meta, image, data, thumbnail_jpeg(image, self.thumbnail_px))

    def _finish(
        self, prepared: _Prepared, report: IngestReport, bar: tqdm, written: set[int]
    ) -> None:
        decoded = [d for d in prepared.decoded if d.meta.id not in written]
        report.duplicates += len(prepared.decoded) - len(decoded)
        if decoded:
            vectors = self.embedder.embed_images([d.image for d in decoded])
            for d in decoded:
                ext = d.meta.blob_key.rsplit(".", 1)[-1]
                self.blobs.put(d.meta.blob_key, d.data, _CONTENT_TYPES.get(ext, "image/" + ext))
                self.blobs.put(thumb_key(d.meta.sha256), d.thumbnail, "image/jpeg")
            self.store.insert(
                [ImageRecord(meta=d.meta, embedding=v) for d, v in zip(decoded, vectors, strict=True)]
            )
            written.update(d.meta.id for d in decoded)
        report.seen += prepared.seen
        report.added += len(decoded)
        report.already_stored += prepared.already_stored
        report.duplicates += prepared.duplicates
        report.failed.extend(prepared.failed)
        bar.update(prepared.seen)
        if bar.format_dict.get("elapsed"):
            bar.set_postfix(added=report.added, failed=len(report.failed), refresh=False)
