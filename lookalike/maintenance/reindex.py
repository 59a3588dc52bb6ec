"""`lookalike reindex`: rebuild a collection with another model while the old one serves.

Every stored image's original is read back from the blob store by its `blob_key`, embedded by
the new model and written, with its metadata unchanged, into a new physical collection for the
new model spec, by the ingest pipeline's stages (read, decode, embed, write: vectors only, the
blobs are stored already). Ingests and deletes that reach the live collection meanwhile are
carried over by a catch-up pass that compares the two collections' ids, batch by batch, and
runs what it finds through the same stages. Then the public alias is pointed at the new
collection in one step (Milvus `alter_alias`), so searches answer from the old collection until
that moment and from the new one after it. The old collection is kept: a rollback points the
alias back at it.

A write that reaches the live collection between the last catch-up round and the swap is not
carried over (an ingest run again then adds it: ingestion is idempotent). Memory stays bounded:
ids and metadata are read ID_BATCH_SIZE rows at a time, and the pipeline's bounded queues hold a
few batches of originals while one is embedded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

from lookalike.core.blob_store import BlobStore
from lookalike.core.errors import ConfigError, StoreUnavailable
from lookalike.core.iterables import chunks
from lookalike.core.vector_store import DbaParams, MilvusVectorStore
from lookalike.embedder.runtime import Embedder
from lookalike.ingestion.metrics import STAGES
from lookalike.ingestion.pipeline import Failure, IngestPipeline, IngestReport
from lookalike.ingestion.retry import RetryPolicy
from lookalike.ingestion.sources import StoredItem
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
    collection during the copy and carried over; `swapped` whether the alias now serves `current`;
    `stage_seconds` the ingest pipeline's busy seconds per stage, over the copy and the catch-up.
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
    stage_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))


ProgressCallback = Callable[[ReindexStep, ReindexReport], None]
# The originals of the given ids still stored, with their metadata.
ReadBack = Callable[[list[int]], Iterator[StoredItem]]


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


def _stored_items(
    store: MilvusVectorStore, blobs: BlobStore, retry: RetryPolicy, ids: list[int]
) -> Iterator[StoredItem]:
    """The originals of those of `ids` still stored, with their metadata (one read)."""
    return (StoredItem(meta, blobs, retry) for meta in store.get(ids) if meta is not None)


def _left_out(failure: Failure) -> ReindexFailure:
    """A stored image the pipeline could not copy, as the re-index reports it."""
    meta = failure.stored
    assert meta is not None  # the re-index feeds the pipeline StoredItems only
    reason = failure.reason if failure.stage == "read" else f"cannot decode: {failure.reason}"
    return ReindexFailure(meta.id, meta.blob_key, reason)


def _add_stage_seconds(report: ReindexReport, run: IngestReport) -> None:
    """Count a pipeline run's busy seconds per stage in the re-index's."""
    for stage, seconds in run.stage_seconds.items():
        report.stage_seconds[stage] += seconds


def _copy_all(
    store: MilvusVectorStore, pipeline: IngestPipeline, read_back: ReadBack,
    report: ReindexReport, progress: ProgressCallback,
) -> None:
    """Copy every stored image through the pipeline, reporting after each batch."""
    def copied(run: IngestReport) -> None:
        report.rows = run.added
        report.failed.extend(_left_out(f) for f in run.failed[len(report.failed):])
        progress("copying", report)

    items = (item for ids in store.iter_ids(batch_size=ID_BATCH_SIZE) for item in read_back(ids))
    _add_stage_seconds(report, pipeline.run(items, progress=False, on_batch=copied))


def _catch_up(
    store: MilvusVectorStore, target: MilvusVectorStore, pipeline: IngestPipeline,
    read_back: ReadBack, report: ReindexReport, dba: DbaParams | None,
) -> int:
    """One round: copy what the live collection gained, remove what it lost; changes made."""
    failed_ids = {f.id for f in report.failed}
    fed: list[int] = []

    def missing_items() -> Iterator[StoredItem]:
        for ids in store.iter_ids(batch_size=ID_BATCH_SIZE):
            wanted = [i for i in ids if i not in failed_ids]
            present = target.existing_ids(wanted)
            for item in read_back([i for i in wanted if i not in present]):
                fed.append(item.meta.id)
                yield item

    run = pipeline.run(missing_items(), progress=False)
    _add_stage_seconds(report, run)
    report.failed.extend(_left_out(f) for f in run.failed)
    failed_ids.update(f.id for f in report.failed)
    written = [i for i in fed if i not in failed_ids]
    if dba is not None and written:
        apply_dba(target, written, dba.k, dba.alpha)
    report.rows += run.added
    report.caught_up += run.added
    changes = len(fed)
    for ids in target.iter_ids(batch_size=ID_BATCH_SIZE):
        gone = sorted(set(ids) - store.existing_ids(ids))
        if gone:
            removed = target.delete(gone)
            report.rows -= removed
            report.removed += removed
            changes += removed
    # An image deleted from the live collection since it failed is gone, not failed.
    still_stored: set[int] = set()
    for chunk in chunks(sorted(failed_ids), ID_BATCH_SIZE):
        still_stored |= store.existing_ids(chunk)
    report.failed = [f for f in report.failed if f.id in still_stored]
    return changes


def reindex(
    store: MilvusVectorStore,
    embedder: Embedder,
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
    retry = retry or RetryPolicy()
    # The ingest stages into the new collection, writing vectors only: the blobs are stored.
    pipeline = IngestPipeline(embedder, target, blobs, batch_size=batch_size,
                              decode_workers=workers, thumbnail_px=0, retry=retry,
                              write_blobs=False)
    read_back = partial(_stored_items, store, blobs, retry)
    _copy_all(store, pipeline, read_back, report, notify)
    notify("copied", report)
    if dba is not None:
        apply_dba_all(target, dba.k, dba.alpha)
    if prepare is not None:
        prepare(target)
    for _ in range(CATCH_UP_ROUNDS):
        changes = _catch_up(store, target, pipeline, read_back, report, dba)
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
