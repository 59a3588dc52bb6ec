"""`lookalike reindex`: rebuild a collection with another model while the old one serves.

Every stored image's original is read back from the blob store by its `blob_key`, embedded by
the new model and written, with its metadata unchanged, into a new physical collection for the
new model spec. Ingests and deletes that reach the live collection meanwhile are carried over by
a catch-up pass that compares the two collections' ids, batch by batch. Then the public alias is
pointed at the new collection in one step (Milvus `alter_alias`), so searches answer from the old
collection until that moment and from the new one after it. The old collection is kept: a
rollback points the alias back at it.

A write that reaches the live collection between the last catch-up round and the swap is not
carried over (an ingest run again then adds it: ingestion is idempotent). Memory stays bounded:
ids and metadata are read ID_BATCH_SIZE rows at a time, and at most two batches of decoded images
are held, one embedding while the next one's originals are fetched and decoded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from lookalike.core.blob_store import BlobStore
from lookalike.core.errors import ConfigError, NotFound, StoreUnavailable
from lookalike.core.iterables import chunks
from lookalike.core.schemas import ImageMeta, ImageRecord
from lookalike.core.vector_store import DbaParams, MilvusVectorStore
from lookalike.embedder.errors import ImageError
from lookalike.embedder.spec import EmbedderSpec
from lookalike.ingestion.retry import RetryPolicy, idempotent_insert, with_retry
from lookalike.maintenance.dba import apply_dba, apply_dba_all

BATCH_SIZE = 32
# Ids and metadata are read, and the collections' ids compared, this many at a time: each read
# is a round trip that waits for Milvus's strong consistency, so few large ones beat many small.
ID_BATCH_SIZE = 1000
WORKERS = 4
# Catch-up rounds run until one finds nothing to carry over, at most this many (an ingest that
# never pauses would otherwise keep the swap waiting).
CATCH_UP_ROUNDS = 3

# Sent to `progress`: after each copied batch, when the copy ends, after each catch-up round,
# and when the alias has been moved or left in place.
ReindexStep = Literal["copying", "copied", "caught_up", "swapped", "not_swapped"]


@dataclass(frozen=True, slots=True)
class ReindexFailure:
    """A stored image left out of the new collection, and why."""

    id: int
    blob_key: str
    reason: str


@dataclass(slots=True)
class ReindexReport:
    """What a re-index did; filled in as it goes (progress callbacks see it so far).

    `previous` is the physical collection served before (kept, for a rollback), `current` the
    new one; `total` the rows the live collection held when the copy started, `rows` those the
    new one holds; `caught_up` and `removed` the images stored in and deleted from the live
    collection during the copy and carried over; `swapped` whether the alias now serves `current`.
    """

    spec: dict[str, Any]
    previous: str
    current: str
    total: int = 0
    rows: int = 0
    caught_up: int = 0
    removed: int = 0
    failed: list[ReindexFailure] = field(default_factory=list)
    swapped: bool = False
    seconds: float = 0.0


ProgressCallback = Callable[[ReindexStep, ReindexReport], None]


class ReindexEmbedder(Protocol):
    """What a re-index needs from the new model (an in-process `Embedder`)."""

    @property
    def spec(self) -> EmbedderSpec:
        """The model spec of the descriptors it returns."""
        ...

    def decode(self, data: bytes) -> Image.Image:
        """Decode one image as the model's inputs are decoded; raises ImageError."""
        ...

    def embed_images_with_categories(
        self, images: Sequence[Image.Image]
    ) -> tuple[NDArray[np.float32], list[str]]:
        """Descriptors of RGB images, N x D, L2-normalised, in input order, and each image's
        predicted category ("" without a classifier)."""
        ...


def serve_version(
    store: MilvusVectorStore, target: MilvusVectorStore, rows: int, previous: str
) -> None:
    """Serve `store`'s public name from `target`, atomically, once the copy is known complete.

    Refused, leaving the alias where it is, when `target` does not hold exactly `rows` rows
    (StoreUnavailable) or when the alias no longer serves `previous`, the collection the copy was
    made from (ConfigError: another run moved it meanwhile). `previous` itself is kept.
    """
    if (copied := target.count()) != rows:
        raise StoreUnavailable(
            f"{target.name!r} holds {copied} rows after copying {rows}; {store.name!r} still "
            f"serves {previous}"
        )
    if (live := store.live_collection()) != previous:
        raise ConfigError(
            f"{store.name!r} was moved from {previous} to {live} while {target.name} was built "
            "from it: left as it is"
        )
    store.point_alias(target.name)


def _stored_metas(store: MilvusVectorStore, ids: Iterable[list[int]]) -> Iterator[ImageMeta]:
    """The metadata of each batch of `ids` still stored, read one batch at a time."""
    for batch in ids:
        yield from (meta for meta in store.get(batch) if meta is not None)


class _Copier:
    """Reads originals from the blob store, embeds them with the new model, writes the copies."""

    def __init__(
        self, embedder: ReindexEmbedder, blobs: BlobStore, target: MilvusVectorStore,
        pool: ThreadPoolExecutor, retry: RetryPolicy, report: ReindexReport,
    ) -> None:
        self.embedder = embedder
        self.blobs = blobs
        self.target = target
        self.pool = pool
        self.retry = retry
        self.report = report
        self.failed_ids: set[int] = set()

    def start(self, metas: list[ImageMeta]) -> list[Future[Image.Image | ReindexFailure]]:
        """Fetch and decode `metas`' originals in the pool (overlapping the embedding of
        another batch)."""
        return [self.pool.submit(self._load, meta) for meta in metas]

    def _load(self, meta: ImageMeta) -> Image.Image | ReindexFailure:
        try:
            data = with_retry(
                lambda: self.blobs.get(meta.blob_key), f"blob get of {meta.blob_key}", self.retry
            )
        except NotFound:
            return ReindexFailure(meta.id, meta.blob_key, "blob missing from the blob store")
        try:
            return self.embedder.decode(data)
        except ImageError as exc:
            return ReindexFailure(meta.id, meta.blob_key, f"cannot decode: {exc}")

    def finish(
        self, metas: list[ImageMeta], loading: list[Future[Image.Image | ReindexFailure]]
    ) -> list[int]:
        """Embed the loaded images and store them in the target; the ids written."""
        loaded: list[tuple[ImageMeta, Image.Image]] = []
        for meta, future in zip(metas, loading, strict=True):
            result = future.result()
            if isinstance(result, ReindexFailure):
                self.report.failed.append(result)
                self.failed_ids.add(meta.id)
            else:
                loaded.append((meta, result))
        if not loaded:
            return []
        vectors, categories = self.embedder.embed_images_with_categories(
            [image for _, image in loaded])
        records = [ImageRecord(meta=meta, embedding=vector, category=category)
                   for (meta, _), vector, category in zip(loaded, vectors, categories, strict=True)]
        self._insert(records)
        self.report.rows += len(records)
        return [r.meta.id for r in records]

    def _insert(self, records: list[ImageRecord]) -> None:
        """Insert with retries; none is stored twice."""
        with_retry(idempotent_insert(self.target, records),
                   f"Milvus insert into {self.target.name!r}", self.retry)


def _copy_all(
    store: MilvusVectorStore, copier: _Copier, batch_size: int, progress: ProgressCallback
) -> None:
    """Copy every stored image, embedding one batch while the next one's originals load."""
    pending: tuple[list[ImageMeta], list[Future[Image.Image | ReindexFailure]]] | None = None
    metas_read = _stored_metas(store, store.iter_ids(batch_size=ID_BATCH_SIZE))
    for metas in chunks(metas_read, batch_size):
        started = (metas, copier.start(metas))
        if pending is not None:
            copier.finish(*pending)
            progress("copying", copier.report)
        pending = started
    if pending is not None:
        copier.finish(*pending)
        progress("copying", copier.report)


def _catch_up(
    store: MilvusVectorStore, target: MilvusVectorStore, copier: _Copier, batch_size: int,
    dba: DbaParams | None,
) -> int:
    """One round: copy what the live collection gained, remove what it lost; changes made."""
    report = copier.report
    changes = 0
    for ids in store.iter_ids(batch_size=ID_BATCH_SIZE):
        wanted = [i for i in ids if i not in copier.failed_ids]
        present = target.existing_ids(wanted)
        missing = [i for i in wanted if i not in present]
        for metas in chunks(_stored_metas(store, [missing]), batch_size):
            written = copier.finish(metas, copier.start(metas))
            if dba is not None and written:
                apply_dba(target, written, dba.k, dba.alpha)
            report.caught_up += len(written)
            changes += len(metas)
    for ids in target.iter_ids(batch_size=ID_BATCH_SIZE):
        gone = sorted(set(ids) - store.existing_ids(ids))
        if gone:
            removed = target.delete(gone)
            report.rows -= removed
            report.removed += removed
            changes += removed
    # An image deleted from the live collection since it failed is gone, not failed.
    still_stored: set[int] = set()
    for chunk in chunks(sorted(copier.failed_ids), ID_BATCH_SIZE):
        still_stored |= store.existing_ids(chunk)
    report.failed = [f for f in report.failed if f.id in still_stored]
    copier.failed_ids = still_stored
    return changes


def reindex(
    store: MilvusVectorStore,
    embedder: ReindexEmbedder,
    blobs: BlobStore,
    *,
    batch_size: int = BATCH_SIZE,
    workers: int = WORKERS,
    dba: DbaParams | None = None,
    allow_missing: bool = False,
    retry: RetryPolicy | None = None,
    progress: ProgressCallback | None = None,
    prepare: Callable[[MilvusVectorStore], None] | None = None,
) -> ReindexReport:
    """Rebuild `store` with `embedder`'s model from the stored originals, then serve it.

    The new collection keeps `dba` (None: the live collection's DBA, if any). An image whose
    original is missing or cannot be decoded is reported and left out; the alias is then moved
    only with `allow_missing` (the report's `swapped` says whether it was). `prepare` is called
    with the new collection once the copy is complete, before the catch-up and the swap (a
    roll-out writes hash codes there: served from the first search after the swap, and kept in
    step by the catch-up's writes). Raises ConfigError when the collection already holds this
    model's vectors, StoreUnavailable when a store stays down.
    """
    started = time.perf_counter()
    spec = embedder.spec.to_dict()
    live_spec = store.stored_spec()
    previous = store.live_collection()
    if live_spec == spec:
        raise ConfigError(
            f"collection {store.name!r} ({previous}) already holds vectors of this model "
            f"({spec['backbone']}, weights {spec['weights']}): nothing to re-index"
        )
    dba = dba or store.dba_params()
    target = store.create_version(spec, embedder.spec.dim, dba)
    report = ReindexReport(spec=spec, previous=previous, current=target.name, total=store.count())
    notify = progress or (lambda step, report: None)
    with ThreadPoolExecutor(workers, thread_name_prefix="reindex-load") as pool:
        copier = _Copier(embedder, blobs, target, pool, retry or RetryPolicy(), report)
        _copy_all(store, copier, batch_size, notify)
        notify("copied", report)
        if dba is not None:
            apply_dba_all(target, dba.k, dba.alpha)
        if prepare is not None:
            prepare(target)
        for _ in range(CATCH_UP_ROUNDS):
            changes = _catch_up(store, target, copier, batch_size, dba)
            notify("caught_up", report)
            if not changes:
                break
    if report.failed and not allow_missing:
        notify("not_swapped", report)
    else:
        serve_version(store, target, report.rows, previous)
        report.swapped = True
        notify("swapped", report)
    report.seconds = time.perf_counter() - started
    return report
