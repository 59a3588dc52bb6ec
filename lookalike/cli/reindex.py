"""`lookalike reindex`: rebuild a collection with another backbone, or roll it out to a model
version of the registry, then swap its alias to the new collection."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

from lookalike.cli.runner import EXIT_ERROR, EXIT_OK, EXIT_SOME_FILES_FAILED

if TYPE_CHECKING:
    from lookalike.core.settings import Settings
    from lookalike.maintenance.reindex import ReindexReport, ReindexStep


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `reindex`."""
    reindex = commands.add_parser(
        "reindex", help="rebuild a collection with another model, then swap its alias to it"
    )
    reindex.add_argument("--model", required=True, metavar="BACKBONE|VERSION",
                         help="the new backbone (the rest of the model settings are kept), or a "
                              "version of the model registry (v1, v2, ...: its backbone, weights "
                              "and GeM p, and its learned hash codes on a Milvus server)")
    reindex.add_argument("--weights", default="", metavar="PATH",
                         help="weights file for the new backbone (default: its own)")
    reindex.add_argument("--collection", help="collection name (default: settings)")
    reindex.add_argument("--allow-missing", action="store_true",
                         help="swap even when some images' originals are missing or unreadable "
                              "(they are left out); by default the old collection keeps serving")
    reindex.set_defaults(func=cmd_reindex)


def cmd_reindex(settings: Settings, args: argparse.Namespace) -> int:
    """Rebuild a collection with another model from the stored originals, then serve it."""
    from lookalike.app.compose import blobs_from, dba_from, embedder_from, existing_store_from
    from lookalike.core.model_registry import is_version
    from lookalike.maintenance.reindex import reindex

    if is_version(args.model):
        return _reindex_to_version(settings, args)
    model = settings.model.model_copy(update={"backbone": args.model, "weights": args.weights})
    blobs = blobs_from(settings)
    store = existing_store_from(settings, args.collection)
    embedder = embedder_from(settings.model_copy(update={"model": model}))
    old = store.stored_spec().get("backbone", "?")
    print(f"re-indexing {store.name!r} ({store.live_collection()}, {old}) with {args.model} "
          f"({embedder.device}); it keeps serving until the new collection is complete")
    last_print = time.monotonic()

    def progress(step: ReindexStep, report: ReindexReport) -> None:
        nonlocal last_print
        if step == "copying" and time.monotonic() - last_print < 5:
            return
        last_print = time.monotonic()
        if step in ("copying", "copied"):
            print(f"  copied {report.rows}/{report.total} images into {report.current}, "
                  f"{len(report.failed)} failed")
        elif step == "caught_up":
            print(f"  catch-up: {report.caught_up} images stored and {report.removed} deleted "
                  "meanwhile carried over")

    report = reindex(
        store, embedder, blobs, batch_size=embedder.batch_size,
        workers=settings.ingest.decode_workers, dba=dba_from(settings),
        allow_missing=args.allow_missing, progress=progress,
    )
    environment = {"LOOKALIKE_MODEL__BACKBONE": args.model}
    if args.weights:
        environment["LOOKALIKE_MODEL__WEIGHTS"] = args.weights
    if model.precision == "int8":
        environment["LOOKALIKE_MODEL__PRECISION"] = "int8"
        environment["LOOKALIKE_MODEL__INT8_MODEL"] = model.int8_model
    return _reindexed(store.name, report, environment)


def _reindexed(name: str, report: ReindexReport, environment: dict[str, str]) -> int:
    """Print how a re-index of collection `name` ended and what to serve it with; exit code."""
    for failure in report.failed:
        print(f"  left out {failure.id} ({failure.blob_key}): {failure.reason}", file=sys.stderr)
    print(f"{report.rows} images re-indexed into {report.current} in {report.seconds:.1f} s, "
          f"{len(report.failed)} left out")
    if not report.swapped:
        print(f"error: {len(report.failed)} images could not be re-indexed, so {name!r} "
              f"still serves {report.previous}; restore their blobs and run again, or pass "
              f"--allow-missing to serve {report.current} without them", file=sys.stderr)
        return EXIT_ERROR
    print(f"{name!r} now serves {report.current}; embed queries and ingest with "
          + " and ".join(f"{key}={value}" for key, value in environment.items()))
    print(f"the previous collection {report.previous} is kept: drop it once searches look right, "
          f"or roll back by pointing alias {name!r} at it (Milvus alter_alias)")
    return EXIT_SOME_FILES_FAILED if report.failed else EXIT_OK


def _reindex_to_version(settings: Settings, args: argparse.Namespace) -> int:
    """`reindex --model VERSION`: roll the collection out to a model of the registry."""
    from lookalike.app.compose import blobs_from, existing_store_from
    from lookalike.app.rollout import roll_out

    if args.weights:
        print(f"error: model version {args.model} carries its own weights; --weights goes with "
              "a backbone name", file=sys.stderr)
        return EXIT_ERROR
    blobs = blobs_from(settings)
    store = existing_store_from(settings, args.collection)
    print(f"re-indexing {store.name!r} ({store.live_collection()}) with model {args.model}; it "
          "keeps serving until the new collection is complete")
    last_print = time.monotonic()

    def progress(done: int, total: int) -> None:
        nonlocal last_print
        if time.monotonic() - last_print >= 5 or done == total:
            last_print = time.monotonic()
            print(f"  re-indexed {done}/{total} images")

    report = roll_out(settings, store, blobs, args.model, progress=progress,
                      allow_missing=args.allow_missing)
    if report.codes_skipped:
        print(f"note: {report.codes_skipped}")
    elif report.hash_id:
        print(f"{report.codes} learned hash codes written ({report.hash_id}): search with "
              "LOOKALIKE_MILVUS__SEARCH_MODE=hash_rerank, or mode=hash_rerank per query")
    return _reindexed(store.name, report.reindex, report.environment())
