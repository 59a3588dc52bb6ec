"""One ingest of an opened source: counted when that is cheap, run through the pipeline, and
database-side augmentation kept up to date. `lookalike ingest` and the server's ingest jobs
both run it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lookalike.core.vector_store import DbaParams
from lookalike.ingestion.pipeline import IngestPipeline, IngestReport
from lookalike.ingestion.sources import LIST_SUFFIXES, Item
from lookalike.maintenance.dba import DbaStore, apply_dba, ids_ingested_since


@dataclass(frozen=True, slots=True)
class IngestOutcome:
    """What one ingest did, and how many embeddings DBA recomputed after it (0: none)."""

    report: IngestReport
    dba: DbaParams | None
    dba_updated: int
    # Whether the index covered every new row when the ingest returned (False: still building
    # in the background; searches are exact, and slower, until it is done).
    indexed: bool = True


def count_when_cheap(source: str, items: Iterable[Item]) -> tuple[int | None, Iterator[Item]]:
    """The number of items and the items again, for folders and list files (cheap to list,
    which gives progress an ETA); (None, items) for the rest (S3 prefixes, tar shards)."""
    path = Path(source)
    if source.startswith("s3://") or not (path.is_dir() or path.suffix.lower() in LIST_SUFFIXES):
        return None, iter(items)
    listed = list(items)
    return len(listed), iter(listed)


def ingest_items(
    pipeline: IngestPipeline,
    store: DbaStore,
    items: Iterable[Item],
    *,
    total: int | None,
    dba: DbaParams | None,
    index_wait_s: float = 60.0,
    progress: bool = True,
    on_batch: Callable[[IngestReport], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> IngestOutcome:
    """Run `pipeline` over `items` into `store` (the pipeline's collection), augment what it
    added when `dba` is set, then seal: flush and wait up to `index_wait_s` for the index to
    cover the new rows, so searches straight after an ingest are as fast as later ones. A
    cancelled run keeps, augments and seals what it stored."""
    started = int(time.time())
    report = pipeline.run(items, total=total, progress=progress, on_batch=on_batch,
                          cancelled=cancelled)
    updated = 0
    if dba is not None and report.added:
        # The pipeline stamps ingested_at with the wall clock: rows stamped since the start are new.
        updated = apply_dba(store, ids_ingested_since(store, started), dba.k, dba.alpha)
    indexed = True
    if report.added or updated:
        indexed = store.seal(index_wait_s, strict=False) if index_wait_s > 0 else False
    return IngestOutcome(report, dba, updated, indexed)
