"""`lookalike ingest`: a folder, s3://bucket/prefix, tar shard(s) or a list of paths/URLs into
the collection."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from lookalike.cli.runner import EXIT_OK, EXIT_SOME_FILES_FAILED

if TYPE_CHECKING:
    from lookalike.core.settings import Settings
    from lookalike.ingestion.pipeline import IngestReport


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `ingest`."""
    ingest = commands.add_parser(
        "ingest", help="ingest a folder, s3://bucket/prefix, tar shard(s) or list of paths/URLs"
    )
    ingest.add_argument(
        "path", nargs="?",
        help="folder (sub-folder names are labels), s3://bucket/prefix, shard.tar (or a glob "
             "like 'shards/*.tar'), or a .txt/.lst file with one path or http(s) URL per line",
    )
    ingest.add_argument("--demo", action="store_true", help="ingest the bundled demo photographs")
    ingest.add_argument("--collection", help="collection name (default: settings)")
    ingest.add_argument("--report", help="write failed files as JSONL to this path")
    ingest.add_argument("--no-progress", action="store_true")
    ingest.set_defaults(func=cmd_ingest)


def cmd_ingest(settings: Settings, args: argparse.Namespace) -> int:
    """Ingest a folder, s3://bucket/prefix, tar shard(s) or list file of paths/URLs."""
    from lookalike.app.compose import (
        blobs_from,
        clean_interrupted_writes,
        collection_embedder_from,
        dba_from,
        milvus_from,
        pipeline_from,
        store_from,
    )
    from lookalike.app.ingest import count_when_cheap, ingest_items
    from lookalike.ingestion.demo import write_demo_images
    from lookalike.ingestion.metrics import IngestMetrics
    from lookalike.ingestion.sources import open_source
    from lookalike.maintenance.dba import dba_for

    source = str(write_demo_images(settings.data_dir / "demo")) if args.demo else args.path
    # Stores first: one that cannot be reached fails the command before any work starts.
    blobs = blobs_from(settings)
    if cleaned := clean_interrupted_writes(settings, blobs):
        print(cleaned)
    milvus = milvus_from(settings)
    items = open_source(source, settings.blobs, settings.ingest.fetch_timeout_s)
    embedder = collection_embedder_from(settings, blobs, args.collection, milvus=milvus)
    store = store_from(settings, embedder, args.collection, milvus=milvus, blobs=blobs)
    dba = dba_for(store, dba_from(settings))
    total, items = count_when_cheap(source, items)
    print(f"ingesting {'' if total is None else f'{total} images '}from {source} into "
          f"{store.name!r} ({embedder.spec.backbone}, {embedder.device}, {embedder.engine})")
    with IngestMetrics() as metrics:
        if settings.ingest.metrics_port:
            metrics.serve(settings.ingest.metrics_host, settings.ingest.metrics_port)
        outcome = ingest_items(
            pipeline_from(settings, embedder, store, blobs, metrics), store, items,
            total=total, dba=dba, index_wait_s=settings.ingest.index_wait_s,
            progress=not args.no_progress,
        )
    report = outcome.report
    _print_report(report, Path(args.report) if args.report else None)
    print("stage seconds (busy): " + ", ".join(
        f"{stage} {seconds:.1f}" for stage, seconds in report.stage_seconds.items()
    ) + (f"; {report.retries} write retries" if report.retries else ""))
    if outcome.dba is not None and report.added:
        print(f"DBA (k={outcome.dba.k}, alpha={outcome.dba.alpha}): {outcome.dba_updated} "
              "embeddings recomputed")
    if not outcome.indexed:
        print("the index is still being built in the background: searches are exact, and "
              "slower, until it covers the new images")
    return EXIT_SOME_FILES_FAILED if report.failed else EXIT_OK


def _print_report(report: IngestReport, report_path: Path | None) -> None:
    for failure in report.failed:
        print(f"  skipped {failure.source}: {failure.reason}", file=sys.stderr)
    if report_path is not None:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        with report_path.open("w") as f:
            for failure in report.failed:
                f.write(json.dumps({"path": failure.source, "reason": failure.reason}) + "\n")
    print(
        f"{report.seen} files: {report.added} added, {report.already_stored} already stored, "
        f"{report.duplicates} duplicates, {len(report.failed)} failed; "
        f"{report.seconds:.1f} s, {report.images_per_s:.1f} images/s"
    )
