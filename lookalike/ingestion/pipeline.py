"""The ingestion pipeline: read -> decode -> embed -> write, as stages joined by bounded queues.

    reader thread    read + sha256 (pool), skip ids already stored (one query per batch)
        │ queue (queue_batches)
    decode thread    decode + thumbnail (+ local features) (pool of decode_workers)
        │ queue
    calling thread   batched inference
        │ queue
    writer thread    blobs (pool of write_workers), then vectors; report, progress, metrics

Full queues block the stage before them (backpressure), so memory stays bounded while decode
and writes overlap inference. Idempotent: ids come from content hashes. A bad file never stops
the run: it is reported with its reason. Blobs are written before vectors, so a stored vector
never points at a missing blob; writes retry with capped exponential backoff. A re-index runs the
same stages over StoredItems: they keep their id and metadata, and their blobs are stored already.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Literal, TypeVar

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from tqdm import tqdm

from lookalike.core.blob_store import BlobStore
from lookalike.core.errors import StoreUnavailable
from lookalike.core.ids import content_id
from lookalike.core.iterables import chunks
from lookalike.core.schemas import ImageMeta, ImageRecord, features_key, image_key, thumb_key
from lookalike.core.vector_store import VectorStore
from lookalike.embedder.errors import ImageError
from lookalike.embedder.local_features import LocalFeatureConfig, LocalFeatureError, features_of
from lookalike.embedder.runtime import Embedder
from lookalike.embedder.transforms import content_type, image_extension, thumbnail_jpeg
from lookalike.ingestion.metrics import STAGES, IngestMetrics
from lookalike.ingestion.retry import RetryPolicy, idempotent_insert, with_retry
from lookalike.ingestion.sources import Item, NotRead, StoredItem

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Failure:
    """A file that was not ingested, why, and at which stage; `stored` is the metadata of one
    stored already (a StoredItem)."""

    source: str
    reason: str
    stage: Literal["read", "decode"]
    stored: ImageMeta | None = None


@dataclass(slots=True)
class IngestReport:
    """What one run did, and where its time went (busy seconds per stage)."""

    seen: int = 0
    added: int = 0
    already_stored: int = 0
    duplicates: int = 0
    failed: list[Failure] = field(default_factory=list)
    seconds: float = 0.0
    retries: int = 0
    cancelled: bool = False
    stage_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    @property
    def images_per_s(self) -> float:
        """Files processed per second of wall time."""
        return self.seen / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class _Decoded:
    meta: ImageMeta
    image: Image.Image
    # (key, bytes, content type) of each blob to store before the vector.
    blobs: list[tuple[str, bytes, str]]


@dataclass(slots=True)
class _Batch:
    """One batch as it moves through the stages."""

    seen: int
    loaded: list[tuple[int, Item, bytes, str]] = field(default_factory=list)
    decoded: list[_Decoded] = field(default_factory=list)
    vectors: NDArray[np.float32] | None = None
    categories: list[str] = field(default_factory=list)
    already_stored: int = 0
    duplicates: int = 0
    failed: list[Failure] = field(default_factory=list)


@dataclass(slots=True)
class _SeenIds:
    """Ids met earlier in this run: found already stored, or claimed for writing by this run."""

    stored_before: set[int] = field(default_factory=set)
    claimed: set[int] = field(default_factory=set)


class _Stopped(Exception):
    """Another stage failed; this one stops quietly."""


def _read_reason(exc: OSError) -> str:
    if isinstance(exc, NotRead):
        return str(exc)
    return f"cannot read: {exc.strerror or exc}"


def _stored_meta(item: Item) -> ImageMeta | None:
    """The metadata an item stored already keeps (a re-index), else None."""
    return item.meta if isinstance(item, StoredItem) else None


class IngestPipeline:
    """Ingests source items into one collection; safe to run again on the same items.

    With `local_features`, each new image's local features are stored beside it (for geometric
    verification at search time). With `write_blobs` False only vectors are written: the items'
    originals and thumbnails are stored already (a re-index), so none is made.
    """

    def __init__(
        self,
        embedder: Embedder,
        store: VectorStore,
        blobs: BlobStore,
        *,
        batch_size: int,
        decode_workers: int,
        thumbnail_px: int,
        write_workers: int = 4,
        queue_batches: int = 2,
        retry: RetryPolicy | None = None,
        metrics: IngestMetrics | None = None,
        local_features: LocalFeatureConfig | None = None,
        write_blobs: bool = True,
    ) -> None:
        self.embedder = embedder
        self.store = store
        self.blobs = blobs
        self.batch_size = batch_size
        self.decode_workers = decode_workers
        self.thumbnail_px = thumbnail_px
        self.write_workers = write_workers
        self.queue_batches = queue_batches
        self.retry = retry or RetryPolicy()
        self.metrics = metrics
        self.local_features = local_features
        self.write_blobs = write_blobs
        self._lock = threading.Lock()

    def run(
        self,
        items: Iterable[Item],
        total: int | None = None,
        progress: bool = True,
        *,
        on_batch: Callable[[IngestReport], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> IngestReport:
        """Ingest every item; never raises for a bad file, only for stores that stay down.

        `on_batch` is called (from the writer thread) after each batch with the report so far.
        Once `cancelled()` is true no further item is read: batches already read are finished
        and stored, and the report says `cancelled`.
        """
        report = IngestReport()
        self.embedder.load()
        started = time.perf_counter()
        stop = threading.Event()
        errors: list[BaseException] = []
        to_decode: queue.Queue[_Batch | None] = queue.Queue(self.queue_batches)
        to_embed: queue.Queue[_Batch | None] = queue.Queue(self.queue_batches)
        to_write: queue.Queue[_Batch | None] = queue.Queue(self.queue_batches)
        bar = tqdm(total=total, unit="img", disable=not progress, dynamic_ncols=True)

        def stage(body: Callable[[], None]) -> Callable[[], None]:
            def guarded() -> None:
                try:
                    body()
                except _Stopped:
                    pass
                except BaseException as exc:  # handed to the calling thread, which re-raises
                    errors.append(exc)
                    stop.set()
            return guarded

        def put(q: queue.Queue[_Batch | None], batch: _Batch | None) -> None:
            while True:
                if stop.is_set():
                    raise _Stopped
                try:
                    q.put(batch, timeout=0.1)
                    return
                except queue.Full:
                    continue

        def get(q: queue.Queue[_Batch | None]) -> _Batch | None:
            while True:
                if stop.is_set():
                    raise _Stopped
                try:
                    return q.get(timeout=0.1)
                except queue.Empty:
                    continue

        with ThreadPoolExecutor(self.decode_workers, thread_name_prefix="read") as readers, \
                ThreadPoolExecutor(self.decode_workers, thread_name_prefix="decode") as decoders, \
                ThreadPoolExecutor(self.write_workers, thread_name_prefix="write") as writers:

            def read_stage() -> None:
                seen = _SeenIds()
                batches = chunks(items, self.batch_size)
                while True:
                    if cancelled is not None and cancelled():
                        report.cancelled = True
                        break
                    if (batch := next(batches, None)) is None:
                        break
                    put(to_decode, self._load(batch, readers, seen, report))
                put(to_decode, None)

            def decode_stage() -> None:
                while (batch := get(to_decode)) is not None:
                    self._timed(report, "decode", partial(self._decode_batch, batch, decoders))
                    put(to_embed, batch)
                put(to_embed, None)

            def write_stage() -> None:
                while (batch := get(to_write)) is not None:
                    self._write(batch, writers, report)
                    self._account(batch, report, bar)
                    if on_batch is not None:
                        report.seconds = time.perf_counter() - started
                        on_batch(report)

            threads = [
                threading.Thread(target=stage(body), name=f"ingest-{name}", daemon=True)
                for name, body in (("read", read_stage), ("decode", decode_stage),
                                   ("write", write_stage))
            ]
            for thread in threads:
                thread.start()
            try:
                stage(lambda: self._embed_stage(get, put, to_embed, to_write, report))()
            finally:
                if errors:
                    stop.set()
                for thread in threads:
                    thread.join()
                bar.close()
        if errors:
            raise errors[0]
        report.seconds = time.perf_counter() - started
        return report

    def _embed_stage(
        self,
        get: Callable[[queue.Queue[_Batch | None]], _Batch | None],
        put: Callable[[queue.Queue[_Batch | None], _Batch | None], None],
        source: queue.Queue[_Batch | None],
        sink: queue.Queue[_Batch | None],
        report: IngestReport,
    ) -> None:
        while (batch := get(source)) is not None:
            if batch.decoded:
                images = [d.image for d in batch.decoded]
                batch.vectors, batch.categories = self._timed(
                    report, "embed", partial(self.embedder.embed_images_with_categories, images)
                )
            put(sink, batch)
        put(sink, None)

    def _timed(self, report: IngestReport, stage: str, call: Callable[[], T]) -> T:
        started = time.perf_counter()
        try:
            return call()
        finally:
            elapsed = time.perf_counter() - started
            report.stage_seconds[stage] += elapsed
            if self.metrics is not None:
                self.metrics.stage_seconds.labels(stage=stage).observe(elapsed)

    def _with_retry(self, call: Callable[[], T], what: str, store: str,
                    report: IngestReport) -> T:
        def counted(_: StoreUnavailable) -> None:
            with self._lock:
                report.retries += 1
            if self.metrics is not None:
                self.metrics.retries.labels(store=store).inc()

        return with_retry(call, what, self.retry, on_retry=counted)

    def _load(
        self, items: Sequence[Item], readers: ThreadPoolExecutor, seen: _SeenIds,
        report: IngestReport,
    ) -> _Batch:
        """Read and hash a batch; drop duplicates and ids already stored (one query)."""
        batch = _Batch(seen=len(items))
        started = time.perf_counter()

        def read(item: Item) -> tuple[Item, bytes] | Failure:
            try:
                return item, item.read()
            except OSError as exc:
                return Failure(item.source, _read_reason(exc), "read", _stored_meta(item))

        fresh: dict[int, tuple[Item, bytes, str]] = {}
        for result in readers.map(read, items):
            if isinstance(result, Failure):
                batch.failed.append(result)
                continue
            item, data = result
            # A stored original keeps its id even if its bytes no longer hash to it.
            stored = _stored_meta(item)
            image_id, digest = (stored.id, stored.sha256) if stored is not None else content_id(data)
            if image_id in seen.stored_before:
                batch.already_stored += 1
            elif image_id in seen.claimed or image_id in fresh:
                batch.duplicates += 1
            else:
                fresh[image_id] = (item, data, digest)
        existing = self._with_retry(
            lambda: self.store.existing_ids(list(fresh)), "Milvus query of stored ids", "milvus",
            report,
        ) if fresh else set()
        batch.already_stored += len(existing)
        batch.loaded = [(i, *v) for i, v in fresh.items() if i not in existing]
        seen.stored_before.update(existing)
        seen.claimed.update(fresh)
        elapsed = time.perf_counter() - started
        report.stage_seconds["read"] += elapsed
        if self.metrics is not None:
            self.metrics.stage_seconds.labels(stage="read").observe(elapsed)
        return batch

    def _decode_batch(self, batch: _Batch, decoders: ThreadPoolExecutor) -> None:
        for result in decoders.map(lambda args: self._decode(*args), batch.loaded):
            if isinstance(result, Failure):
                batch.failed.append(result)
            else:
                batch.decoded.append(result)
        batch.loaded = []

    def _decode(self, image_id: int, item: Item, data: bytes, digest: str) -> _Decoded | Failure:
        stored = _stored_meta(item)
        try:
            decoded = self.embedder.decode_sized(data)
            ext = image_extension(data)
        except ImageError as exc:
            return Failure(item.source, str(exc), "decode", stored)
        meta = stored or ImageMeta(
            id=image_id, sha256=digest, blob_key=image_key(digest, ext), source=item.source,
            label=item.label, width=decoded.width, height=decoded.height,
            ingested_at=int(time.time()),
        )
        return _Decoded(meta, decoded.image, self._blobs(meta, data, decoded.image))

    def _blobs(self, meta: ImageMeta, data: bytes,
               image: Image.Image) -> list[tuple[str, bytes, str]]:
        """The original, its thumbnail and its local features, unless blobs are not written."""
        if not self.write_blobs:
            return []
        ext = meta.blob_key.rsplit(".", 1)[-1]
        blobs = [(meta.blob_key, data, content_type(ext)),
                 (thumb_key(meta.sha256), thumbnail_jpeg(image, self.thumbnail_px), "image/jpeg")]
        if (features := self._features(data)) is not None:
            blobs.append((features_key(meta.sha256), features, "application/octet-stream"))
        return blobs

    def _features(self, data: bytes) -> bytes | None:
        """The stored form of the image's local features, when verification wants them."""
        if self.local_features is None:
            return None
        try:
            return features_of(data, self.embedder.config.max_pixels,
                               self.local_features).to_bytes()
        except (LocalFeatureError, ImageError):
            # Verification is a refinement: an image without features is still searchable and
            # simply never verifies (a missing features blob counts as 0 inliers).
            return None

    def _write(self, batch: _Batch, writers: ThreadPoolExecutor, report: IngestReport) -> None:
        """Blobs of the batch (in parallel), then its vectors once every blob is stored."""
        if not batch.decoded or batch.vectors is None:
            return
        puts = [blob for d in batch.decoded for blob in d.blobs]

        def put_blob(args: tuple[str, bytes, str]) -> None:
            key, data, content_type = args
            self._with_retry(
                lambda: self.blobs.put(key, data, content_type), f"blob put of {key}", "blobs",
                report,
            )

        if puts:
            self._timed(report, "write_blobs", lambda: list(writers.map(put_blob, puts)))
        records = [ImageRecord(meta=d.meta, embedding=v, category=c)
                   for d, v, c in zip(batch.decoded, batch.vectors, batch.categories, strict=True)]
        self._timed(report, "write_vectors", lambda: self._insert(records, report))

    def _insert(self, records: list[ImageRecord], report: IngestReport) -> None:
        """Insert with retries; none is stored twice."""
        self._with_retry(idempotent_insert(self.store, records),
                         f"Milvus insert of {len(records)} vectors", "milvus", report)

    def _account(self, batch: _Batch, report: IngestReport, bar: tqdm) -> None:
        added = len(batch.decoded)
        report.seen += batch.seen
        report.added += added
        report.already_stored += batch.already_stored
        report.duplicates += batch.duplicates
        report.failed.extend(batch.failed)
        if self.metrics is not None:
            for outcome, count in (("added", added), ("already_stored", batch.already_stored),
                                   ("duplicate", batch.duplicates),
                                   ("failed", len(batch.failed))):
                self.metrics.images.labels(outcome=outcome).inc(count)
        bar.update(batch.seen)
        bar.set_postfix(added=report.added, failed=len(report.failed), refresh=False)
