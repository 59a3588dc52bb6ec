"""`lookalike`: the composition root. Builds settings once and passes them down."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from lookalike.app.compose import blobs_from, embedder_from, engine_from, pipeline_from, store_from
from lookalike.core.errors import LookalikeError
from lookalike.core.model_registry import ModelVersion
from lookalike.core.settings import Settings
from lookalike.embedder.errors import EmbedderError
from lookalike.evaluation.datasets import EvalDataset
from lookalike.ingestion.pipeline import IngestReport
from lookalike.maintenance.reindex import ReindexReport
from lookalike.services.client import ClientError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_SOME_FILES_FAILED = 3
# `lookalike health`: no server answered (nothing listens, or it speaks the other transport).
EXIT_UNREACHABLE = 2


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


def cmd_ingest(settings: Settings, args: argparse.Namespace) -> int:
    """Ingest a folder, s3://bucket/prefix, tar shard(s) or list file of paths/URLs."""
    from lookalike.app.compose import clean_interrupted_writes, collection_embedder_from, dba_from
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
    items = open_source(source, settings.blobs, settings.ingest.fetch_timeout_s)
    embedder = collection_embedder_from(settings, blobs, args.collection)
    store = store_from(settings, embedder, args.collection)
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


def cmd_dedup(settings: Settings, args: argparse.Namespace) -> int:
    """List near-duplicate pairs (one Milvus range search per stored image)."""
    from lookalike.app.compose import existing_store_from
    from lookalike.maintenance.upkeep import near_duplicates

    # Maintenance needs no model: any collection, whitened or not, whatever built it.
    store = existing_store_from(settings, args.collection)
    pairs = 0
    for pair in near_duplicates(store, args.threshold, max_per_image=args.max_per_image):
        first, second = store.get([pair.first, pair.second])
        if args.json:
            print(json.dumps({"score": round(pair.score, 6), "first": pair.first,
                              "second": pair.second,
                              "first_source": first.source if first else "",
                              "second_source": second.source if second else ""}))
        else:
            print(f"{pair.score:.4f}  {pair.first}  {pair.second}  "
                  f"{first.source if first else '?'}  {second.source if second else '?'}")
        pairs += 1
    print(f"{pairs} near-duplicate pairs at cosine >= {args.threshold}", file=sys.stderr)
    return EXIT_OK


def cmd_delete(settings: Settings, args: argparse.Namespace) -> int:
    """Delete images by id or filter: the vector first, then the blob and thumbnail."""
    from lookalike.app.compose import existing_store_from
    from lookalike.maintenance.upkeep import delete_images, delete_matching

    blobs = blobs_from(settings)
    store = existing_store_from(settings, args.collection)
    if args.filter:
        removed = delete_matching(store, blobs, args.filter)
    else:
        removed = delete_images(store, blobs, args.id)
    print(f"deleted {removed} images from {store.name!r}")
    return EXIT_OK


def cmd_dba(settings: Settings, args: argparse.Namespace) -> int:
    """Recompute database-side augmentation from the raw descriptors: pending rows, or --all."""
    from lookalike.app.compose import dba_from, existing_store_from
    from lookalike.core.errors import ConfigError
    from lookalike.maintenance.dba import apply_dba, apply_dba_all, dba_for, unaugmented_ids

    store = existing_store_from(settings, args.collection)
    wanted = dba_from(settings)
    params = (wanted or store.dba_params()) if args.all else dba_for(store, wanted)
    if params is None:
        store.require_raw()
        raise ConfigError(f"no DBA parameters for {store.name!r}: set retrieval.dba_k")
    if args.all:
        updated = apply_dba_all(store, params.k, params.alpha)
    else:
        updated = apply_dba(store, unaugmented_ids(store), params.k, params.alpha)
    print(f"{updated} embeddings of {store.name!r} recomputed (k={params.k}, alpha={params.alpha})")
    return EXIT_OK


def cmd_whiten(settings: Settings, args: argparse.Namespace) -> int:
    """Learn PCA whitening on a collection and serve it whitened; the old collection is kept."""
    from lookalike.app.compose import existing_store_from
    from lookalike.maintenance.whiten import whiten_collection

    blobs = blobs_from(settings)
    store = existing_store_from(settings, args.collection)
    result = whiten_collection(store, blobs, dim=args.dim, power=args.power)
    print(f"{result.rows} images of {store.name!r} whitened to {result.whitening.dim} dimensions; "
          f"it now serves {result.current}")
    print(f"the unwhitened collection {result.previous} is kept: drop it once searches look "
          f"right, or roll back by pointing alias {store.name!r} at it (Milvus alter_alias)")
    print(f"whitening id: {result.whitening.id}")
    return EXIT_OK


def cmd_hash(settings: Settings, args: argparse.Namespace) -> int:
    """Learn ITQ hash codes on a collection and keep a code per image (server only)."""
    from lookalike.app.compose import existing_store_from
    from lookalike.maintenance.hash_codes import hash_collection

    blobs = blobs_from(settings)
    store = existing_store_from(settings, args.collection)
    result = hash_collection(store, blobs, args.bits, max_samples=args.samples)
    print(f"{result.itq.bits}-bit ITQ learned on {result.samples} descriptors of {store.name!r}; "
          f"{result.codes} codes written (hash id {result.itq.id})")
    print("search with it: LOOKALIKE_MILVUS__SEARCH_MODE=hash_rerank, or mode=hash_rerank per query")
    return EXIT_OK


def cmd_quantize(settings: Settings, args: argparse.Namespace) -> int:
    """Make the int8 graph of the settings' model, calibrated on a folder's images or on the
    collection's stored originals, and say how to serve a collection with it."""
    from lookalike.app.compose import existing_store_from
    from lookalike.ingestion.int8 import collection_images, folder_images, make_int8

    # Calibrated from the fp32 network, whatever precision the settings name now.
    model = settings.model.model_copy(update={"precision": "fp32", "engine": "auto",
                                              "int8_model": ""})
    embedder = embedder_from(settings.model_copy(update={"model": model}))
    if args.images:
        source = args.images
        images = folder_images(Path(args.images), args.count)
    else:
        store = existing_store_from(settings, args.collection)
        source = f"the stored originals of {store.name!r}"
        images = collection_images(store, blobs_from(settings), args.count)
    out_dir = Path(args.out) if args.out else settings.data_dir / "models"
    print(f"calibrating int8 {embedder.spec.backbone} on up to {len(images)} images of {source}")
    result = make_int8(embedder, images, out_dir)
    print(f"int8 graph {result.model_id} written to {result.path} ({result.seconds:.0f} s; "
          f"calibrated on {result.calibrated_on} images)")
    print(f"its descriptors against fp32 on {result.checked_on} images it was not calibrated "
          f"on: cosine median {result.cosine_median:.4f}, min {result.cosine_min:.4f}")
    print("int8 is another embedding: build a collection with it, e.g. "
          f"LOOKALIKE_MODEL__PRECISION=int8 LOOKALIKE_MODEL__INT8_MODEL={result.path} lookalike "
          f"reindex --model {model.backbone}, then serve with those two settings")
    return EXIT_OK


def cmd_routes(settings: Settings, args: argparse.Namespace) -> int:
    """Recompute the category means that routed search picks partitions by."""
    from lookalike.app.compose import existing_store_from

    store = existing_store_from(settings, args.collection)
    categories = store.rebuild_routes()
    print(f"{categories} category means of {store.name!r} recomputed from its descriptors")
    return EXIT_OK


def cmd_reindex(settings: Settings, args: argparse.Namespace) -> int:
    """Rebuild a collection with another model from the stored originals, then serve it."""
    import time

    from lookalike.app.compose import dba_from, existing_store_from
    from lookalike.core.model_registry import is_version
    from lookalike.maintenance.reindex import ReindexStep, reindex

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
    import time

    from lookalike.app.compose import existing_store_from
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


def cmd_models(settings: Settings, args: argparse.Namespace) -> int:
    """List, show or delete the trained models of the registry (in the blob store)."""
    from lookalike.core.model_registry import ModelRegistry

    registry = ModelRegistry(blobs_from(settings))
    if args.action == "list":
        models = registry.list()
        if args.json:
            print(json.dumps([m.to_dict() for m in models], indent=2))
        elif not models:
            print("the model registry is empty: `lookalike train DATASET_DIR --register` adds one")
        for model in [] if args.json else models:
            print(_model_line(model))
        return EXIT_OK
    model = registry.get(args.version)
    if args.action == "show":
        print(json.dumps(model.to_dict(), indent=2))
        if args.curves:
            curves = registry.curves_png(model.version)
            if curves is None:
                print(f"error: {model.version} has no curves stored", file=sys.stderr)
                return EXIT_ERROR
            Path(args.curves).write_bytes(curves)
            print(f"curves written to {args.curves}", file=sys.stderr)
        return EXIT_OK
    if not args.yes:
        print(f"error: deleting model {model.version} cannot be undone (its id is not reused); "
              "run again with --yes", file=sys.stderr)
        return EXIT_ERROR
    collection = args.collection or settings.milvus.collection
    serving = _serving_weights(settings, collection)
    if serving is None:
        print(f"warning: could not read which model {collection!r} serves; deleting anyway",
              file=sys.stderr)
    elif serving == model.weights_id:
        print(f"error: {collection!r} serves model {model.version} (weights {serving}); roll it "
              "out to another model first (`lookalike reindex --model ...`)", file=sys.stderr)
        return EXIT_ERROR
    registry.delete(model.version)
    print(f"model {model.version} deleted ({model.size_bytes / 1e6:.1f} MB)")
    return EXIT_OK


def _model_line(model: ModelVersion) -> str:
    """One registry version in a line: when, what, trained on what, how well."""
    import time

    spec = model.spec
    trained_on = spec.get("trained_on") if isinstance(spec.get("trained_on"), dict) else None
    bits = int(spec.get("bits", 0) or 0)
    parts = [
        f"{model.version:>4}", time.strftime("%Y-%m-%d %H:%M", time.localtime(model.created_at)),
        str(spec.get("backbone", "?")), model.weights_id,
        str(spec.get("loss", "")) + (f" + {bits}-bit hash" if bits else ""),
    ]
    if trained_on:
        parts.append(f"trained on {trained_on.get('dataset', '?')} "
                     f"({trained_on.get('images', '?')} images)")
    if isinstance(best := model.metrics.get("best_val_map"), int | float):
        parts.append(f"val mAP {best:.4f}")
    parts.append(f"{model.size_bytes / 1e6:.1f} MB")
    return "  ".join(parts)


def _serving_weights(settings: Settings, collection: str) -> str | None:
    """The weights id of the model `collection` serves ("" when it does not exist); None when
    Milvus cannot be read (a Milvus Lite file held by a running server, say)."""
    from lookalike.core.vector_index import is_lite
    from lookalike.core.vector_store import connect_milvus, live_collection_spec

    if is_lite(settings.milvus.model_copy(update={"uri": settings.milvus_uri})) and not Path(
        settings.milvus_uri
    ).exists():
        return ""
    try:
        client = connect_milvus(settings.milvus_uri, settings.milvus)
        try:
            spec = live_collection_spec(client, collection) or {}
        finally:
            client.close()
    except LookalikeError:
        return None
    return str(spec.get("weights", ""))


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    """Serve the gRPC API until SIGINT or SIGTERM."""
    from lookalike.services.server import start_server

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("faiss").setLevel(logging.WARNING)
    server_settings = settings.server.model_copy(
        update={k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    )
    from lookalike.app.compose import (
        clean_interrupted_writes,
        collection_embedder_from,
        query_embedder_from,
        store_for_spec,
    )
    from lookalike.app.jobs import job_runners_from
    from lookalike.embedder.runtime import Embedder
    from lookalike.services.model_switch import ModelSwitch

    blobs = blobs_from(settings)
    if cleaned := clean_interrupted_writes(settings, blobs):
        print(cleaned, flush=True)
    # A remote EmbedService whitens as its own collection says; the spec check catches a mismatch.
    embedder = (query_embedder_from(settings) if settings.embed_service.address
                else collection_embedder_from(settings, blobs))
    store = store_for_spec(settings, embedder.spec)
    # Roll-out jobs stage their model here; the engine follows the collection to it.
    switch = ModelSwitch()
    engine = engine_from(settings, embedder, store, blobs, follower=switch)
    running = start_server(engine, server_settings, thumbnail_px=settings.ingest.thumbnail_px,
                           max_pixels=settings.model.max_pixels,
                           jobs=job_runners_from(settings, embedder, store, blobs, switch))
    where = (f"remote EmbedService {settings.embed_service.address}"
             if not isinstance(embedder, Embedder)
             else f"in process on {embedder.device}, {embedder.engine}")
    extras = [("TLS" if running.tls else "plaintext"),
              ("token auth" if server_settings.tokens else "no auth"),
              (f"jobs read {', '.join(server_settings.job_roots)}" if server_settings.job_roots
               else "no job roots")]
    if running.metrics_port:
        extras.append(f"metrics on http://{server_settings.metrics_host}:{running.metrics_port}/metrics")
    print(f"gRPC server on {server_settings.host}:{running.port} "
          f"(collection {store.name!r}: {store.count()} images, {embedder.spec.backbone} "
          f"{where}; {', '.join(extras)})",
          flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    running.stop(grace_s=5.0)
    return EXIT_OK


def cmd_search(settings: Settings, args: argparse.Namespace) -> int:
    """Search the server with an image file and print a table."""
    from lookalike.core.filters import build_filter
    from lookalike.services.client import ClientConfig

    data = Path(args.image).read_bytes()
    config = ClientConfig.from_settings(settings.client)
    filter_expr = build_filter(labels=args.label, tags=args.tag, source_prefix=args.source_prefix,
                               since=args.since, until=args.until, expression=args.filter)
    with replace(config, address=args.address or config.address).connect() as client:
        response = client.search(image=data, top_k=args.top_k, filter_expr=filter_expr,
                                 min_score=args.min_score, qe_n=args.qe, verify=args.verify,
                                 mode=args.mode, ef=args.ef, nprobe=args.nprobe,
                                 rerank_factor=args.rerank_factor, route_top_n=args.route_top_n)
    verified = any(hit.inliers is not None for hit in response.hits)
    print(f"{len(response.hits)} results in {response.took_ms:.1f} ms from {response.collection!r}")
    inliers_head = f"  {'inliers':>7}" if verified else ""
    print(f"{'rank':>4}  {'id':>20}  {'score':>6}{inliers_head}  {'label':<16}  source")
    for rank, hit in enumerate(response.hits, 1):
        inliers = f"  {hit.inliers or 0:>7}" if verified else ""
        print(f"{rank:>4}  {hit.id:>20}  {hit.score:6.3f}{inliers}  {hit.label:<16}  {hit.source}")
    return EXIT_OK


def cmd_health(settings: Settings, args: argparse.Namespace) -> int:
    """Exit 0 when the server answers SERVING, 1 when it answers anything else, 2 when none
    answers (with why: connection refused, no answer, TLS on one side only)."""
    from lookalike.services.client import ClientConfig
    from lookalike.services.reachability import HealthStatus

    config = ClientConfig.from_settings(settings.client)
    address = args.address or config.address
    with replace(config, address=address, timeout_s=args.timeout).connect() as client:
        check = client.health()
    match check.status:
        case HealthStatus.SERVING:
            print(f"{address}: SERVING")
            return EXIT_OK
        case HealthStatus.NOT_SERVING:
            print(f"{address}: NOT_SERVING" + (f" ({check.detail})" if check.detail else ""))
            return EXIT_ERROR
    print(f"error: cannot reach {address}: {check.detail}", file=sys.stderr)
    return EXIT_UNREACHABLE


def cmd_eval(settings: Settings, args: argparse.Namespace) -> int:
    """Evaluate retrieval on a labelled dataset: configurations of the quality levers on cached
    descriptors, or (--e2e) the whole ingest and gRPC search path."""
    from lookalike.evaluation.datasets import load_dataset

    # The user's own files: a dataset made of links to photos elsewhere is fine here.
    dataset = load_dataset(Path(args.dataset), confine=False)
    if args.e2e:
        return _eval_end_to_end(settings, args, dataset)
    from lookalike.app.jobs import eval_env_from
    from lookalike.evaluation.configs import ablation, preset
    from lookalike.evaluation.suite import iter_evaluate

    configs = (ablation(dataset.kind) if args.ablation
               else [preset(name, dataset.kind) for name in args.config])
    env = eval_env_from(settings, ann=not args.no_ann, latency_queries=args.latency,
                        progress=not args.no_progress)
    if not args.json:
        print(f"{dataset.name}: {dataset.protocol}", flush=True)
    results = []
    for result in iter_evaluate(dataset, configs, env):
        results.append(result)
        out = result.as_json()
        if args.json:
            print(json.dumps(out), flush=True)
        else:
            print(f"{out['config']:>16}  P@10 {out['p@10']:.4f}  mAP {out['map']:.4f}  "
                  f"NDCG@10 {out['ndcg@10']:.4f}  {out['levers']}", flush=True)
    if args.plot:
        from lookalike.evaluation.plot import plot_pk

        plot_pk(results, Path(args.plot), f"{dataset.name}: precision at K")
    return EXIT_OK


def _eval_end_to_end(settings: Settings, args: argparse.Namespace, dataset: EvalDataset) -> int:
    from lookalike.evaluation.runner import eval_collection_name, evaluate

    if not settings.milvus.uri:
        # Its own Milvus Lite file, so an evaluation can run beside `lookalike serve`.
        settings = settings.model_copy(update={"data_dir": settings.data_dir / "eval"})
    embedder = embedder_from(settings)
    collection = args.collection or eval_collection_name(dataset.name, embedder.spec.to_dict())
    store = store_from(settings, embedder, collection)
    blobs = blobs_from(settings)
    pipeline = pipeline_from(settings, embedder, store, blobs)
    result = evaluate(dataset, embedder, store, blobs, pipeline, progress=not args.no_progress)
    out = result.as_json()
    if args.json:
        print(json.dumps(out))
    else:
        for key, value in out.items():
            print(f"{key:>20}: {value}")
    return EXIT_OK


def cmd_train(settings: Settings, args: argparse.Namespace) -> int:
    """Fine-tune a backbone on a labelled folder; with --protocol half also compare it with the
    pretrained model on the held-out half; with --register store it in the model registry."""
    import time

    from tqdm import tqdm

    from lookalike.embedder.training import EpochLog, TrainConfig
    from lookalike.training.data import labelled_images
    from lookalike.training.run import TrainOptions, compare_on_heldout, train_model

    options = TrainOptions(
        train=TrainConfig(loss=args.loss, bits=args.bits, epochs=args.epochs,
                          batch_size=args.batch_size, lr=args.lr, freeze=args.freeze,
                          patience=args.patience, seed=args.seed, views=args.views),
        val_fraction=args.val_fraction, backbone=args.backbone or "",
        weights=Path(args.weights) if args.weights else None, protocol=args.protocol,
    )
    # The user's own files: links may lead anywhere (a server's training jobs are confined).
    dataset = labelled_images(Path(args.dataset), confine=False)
    out_dir = Path(args.out) if args.out else (
        settings.data_dir / "training" / f"{dataset.root.name}-{args.loss}-"
        f"{time.strftime('%Y%m%d-%H%M%S')}")
    bar = tqdm(total=args.epochs, unit="epoch", desc="training", disable=args.no_progress,
               dynamic_ncols=True, file=sys.stderr)

    def on_epoch(log: EpochLog) -> None:
        if log.epoch:
            bar.update(1)
        bar.set_postfix(loss=f"{log.train_loss:.4f}", val_map=f"{log.val_map:.4f}")

    try:
        outcome = train_model(settings, dataset, options, out_dir=out_dir, on_epoch=on_epoch)
    finally:
        bar.close()
    report: dict[str, Any] = {"out_dir": str(outcome.out_dir), **outcome.metrics}
    if args.protocol == "half":
        report = compare_on_heldout(settings, dataset, options, outcome)
    if args.register:
        from lookalike.core.model_registry import ModelRegistry

        files = outcome.files
        version = ModelRegistry(blobs_from(settings)).register(
            weights=outcome.weights_path.read_bytes(), spec=outcome.spec,
            metrics={**outcome.metrics, **({"heldout": report} if args.protocol == "half" else {})},
            curves_png=files["curves_png"].read_bytes(),
            curves_json=files["curves_json"].read_bytes(),
            hash_artefact=outcome.hash.to_bytes() if outcome.hash is not None else None,
        )
        report["registered_version"] = version.version
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    print(f"trained {outcome.spec['backbone']} ({args.loss}) in {outcome.seconds:.0f} s: best epoch "
          f"{outcome.metrics['best_epoch']}, validation mAP {outcome.metrics['initial_val_map']:.4f} "
          f"-> {outcome.metrics['best_val_map']:.4f}; artefacts in {outcome.out_dir}")
    if args.protocol == "half":
        print(f"held-out half: mAP pretrained {report['pretrained']['map']:.4f} "
              f"fine-tuned {report['finetuned']['map']:.4f}")
        if "hash" in report:
            print(f"{args.bits}-bit codes + float re-rank: mAP@k "
                  f"{report['hash']['hash_rerank_map@k']:.4f} vs float "
                  f"{report['hash']['float_map@k']:.4f}")
    if "registered_version" in report:
        print(f"registered as model version {report['registered_version']}")
    return EXIT_OK


def cmd_ui(settings: Settings, args: argparse.Namespace) -> int:
    """Start the Streamlit UI (it reaches the server through LOOKALIKE_CLIENT__ADDRESS)."""
    app = Path(__file__).parent / "ui" / "streamlit_app.py"
    command = [
        sys.executable, "-m", "streamlit", "run", str(app),
        "--server.address", args.host, "--server.port", str(args.port),
        "--server.headless", "true", "--browser.gatherUsageStats", "false",
    ]
    # Become Streamlit, so that signals (Ctrl-C, SIGTERM from `make run`) reach it directly.
    os.execv(sys.executable, command)


def _register_benchmarks(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`lookalike bench <name>`: each benchmark module in bench/ adds its own sub-command."""
    from importlib import import_module

    for module in BENCHMARKS:
        import_module(f"bench.{module}").register(commands)


# Modules of bench/ that expose `register(commands)`; each sets `func(settings, args) -> int`.
BENCHMARKS: tuple[str, ...] = ("embed", "int8", "ingest", "api", "burst", "search", "routing",
                               "codes_floats")


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(prog="lookalike", description="Search by image.")
    sub = parser.add_subparsers(dest="command", required=True)

    ingest = sub.add_parser(
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

    dedup = sub.add_parser("dedup", help="list near-duplicate pairs above a similarity")
    dedup.add_argument("--threshold", type=float, default=0.95, help="cosine similarity")
    dedup.add_argument("--max-per-image", type=int, default=64)
    dedup.add_argument("--collection", help="collection name (default: settings)")
    dedup.add_argument("--json", action="store_true", help="one JSON object per pair")
    dedup.set_defaults(func=cmd_dedup)

    delete = sub.add_parser("delete", help="delete images (vector, then blob and thumbnail)")
    which = delete.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", type=int, nargs="+", help="ids to delete")
    which.add_argument("--filter", help='filter expression, e.g. label == "junk"')
    delete.add_argument("--collection", help="collection name (default: settings)")
    delete.set_defaults(func=cmd_delete)

    dba = sub.add_parser(
        "dba", help="recompute database-side augmentation from the stored raw descriptors"
    )
    dba.add_argument("--all", action="store_true",
                     help="every image (default: those not augmented yet, and their neighbours)")
    dba.add_argument("--collection", help="collection name (default: settings)")
    dba.set_defaults(func=cmd_dba)

    whiten = sub.add_parser(
        "whiten", help="learn PCA whitening on a collection and serve it whitened"
    )
    whiten.add_argument("--dim", type=int, default=0,
                        help="whitened dimensions (default 0: as many as the collection supports)")
    whiten.add_argument("--power", type=float, default=0.5,
                        help="eigenvalue power: 0.5 whitens fully, less whitens partially")
    whiten.add_argument("--collection", help="collection name (default: settings)")
    whiten.set_defaults(func=cmd_whiten)

    hashing = sub.add_parser(
        "hash", help="learn ITQ binary codes on a collection for hash_rerank search (server only)"
    )
    hashing.add_argument("--bits", type=int, choices=(48, 64, 128, 256), default=128)
    hashing.add_argument("--samples", type=int, default=100_000,
                         help="descriptors ITQ is learned on (evenly spread over the collection)")
    hashing.add_argument("--collection", help="collection name (default: settings)")
    hashing.set_defaults(func=cmd_hash)

    quantize = sub.add_parser(
        "quantize", help="make the int8 graph of the model (CPU, onnxruntime), calibrated on "
                         "your images")
    quantize.add_argument("images", nargs="?",
                          help="folder of calibration images (default: the collection's stored "
                               "originals)")
    quantize.add_argument("--count", type=int, default=240,
                          help="images read: 40 set aside to check it, the rest (in whole passes "
                               "of 40) calibrate")
    quantize.add_argument("--collection", help="collection name (default: settings)")
    quantize.add_argument("--out", help="folder of the int8 graph (default: <data_dir>/models)")
    quantize.set_defaults(func=cmd_quantize)

    routes = sub.add_parser(
        "routes", help="recompute the category means routed search picks partitions by"
    )
    routes.add_argument("--collection", help="collection name (default: settings)")
    routes.set_defaults(func=cmd_routes)

    reindex = sub.add_parser(
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

    models = sub.add_parser("models", help="list, show or delete the trained models of the registry")
    actions = models.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="every registered version, oldest first")
    listing.add_argument("--json", action="store_true", help="the manifests as JSON")
    listing.set_defaults(func=cmd_models)
    show = actions.add_parser("show", help="a version's manifest: spec, metrics, artefacts")
    show.add_argument("version", metavar="VERSION")
    show.add_argument("--curves", metavar="PNG", help="also write its training curves to this file")
    show.set_defaults(func=cmd_models)
    remove = actions.add_parser(
        "delete", help="delete a version (refused while the collection serves it)"
    )
    remove.add_argument("version", metavar="VERSION")
    remove.add_argument("--yes", action="store_true", help="confirm: the deletion is final")
    remove.add_argument("--collection",
                        help="collection checked for serving it (default: settings)")
    remove.set_defaults(func=cmd_models)

    serve = sub.add_parser("serve", help="serve the gRPC API")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(func=cmd_serve)

    search = sub.add_parser("search", help="search the server with an image file")
    search.add_argument("image")
    search.add_argument("--top-k", type=int, default=10)
    search.add_argument("--filter", default="", help='e.g. label == "beach"')
    search.add_argument("--min-score", type=float, help="only hits scoring above this (cosine)")
    search.add_argument("--qe", type=int, metavar="N",
                        help="alpha-query expansion over N neighbours, 0: off (default: server's)")
    search.add_argument("--verify", action=argparse.BooleanOptionalAction, default=None,
                        help="re-rank by geometric verification of local features "
                             "(default: server's setting)")
    search.add_argument("--label", action="append", default=[],
                        help="only images with this label (repeat for any of several)")
    search.add_argument("--tag", action="append", default=[],
                        help="only images with this tag (repeat: all of them)")
    search.add_argument("--source-prefix", default="", help="only images whose source starts so")
    search.add_argument("--since", help="ingested at or after (YYYY-MM-DD, ISO time, unix s)")
    search.add_argument("--until", help="ingested before (YYYY-MM-DD, ISO time, unix s)")
    search.add_argument("--mode", choices=("ann", "hash_rerank", "routed"),
                        help="vector search mode (default: server's milvus.search_mode)")
    search.add_argument("--ef", type=int, help="HNSW search breadth")
    search.add_argument("--nprobe", type=int, help="IVF lists searched")
    search.add_argument("--rerank-factor", type=int,
                        help="re-score top_k x this many candidates with the float vectors")
    search.add_argument("--route-top-n", type=int, help="categories a routed search scans")
    search.add_argument("--address", help="server host:port (default: settings)")
    search.set_defaults(func=cmd_search)

    health = sub.add_parser("health", help="check that the server is serving")
    health.add_argument("--address", help="server host:port (default: settings)")
    health.add_argument("--timeout", type=float, default=2.0)
    health.set_defaults(func=cmd_health)

    evaluate = sub.add_parser("eval", help="evaluate retrieval on a labelled dataset")
    evaluate.add_argument("dataset", help="dataset folder: labels.json, groundtruth.json or "
                               "<class>/<image> folders")
    evaluate.add_argument("--json", action="store_true",
                          help="print one JSON object per configuration")
    evaluate.add_argument("--config", nargs="+", default=["baseline"],
                          help="configurations to run (e.g. baseline, best, +dba; see --ablation); "
                               "best is the best for the dataset's kind (class or instance)")
    evaluate.add_argument("--ablation", action="store_true",
                          help="run each lever on and off (baseline, each lever, best, best minus each)")
    evaluate.add_argument("--plot", help="write the P@K curve of each configuration to this PNG")
    evaluate.add_argument("--latency", type=int, default=0, metavar="N",
                          help="also time N queries given as image bytes, per configuration")
    evaluate.add_argument("--no-ann", action="store_true",
                          help="skip the ANN index's recall@K against exact search")
    evaluate.add_argument("--e2e", action="store_true",
                          help="evaluate the whole path instead: ingest, then search over gRPC")
    evaluate.add_argument("--collection", help="with --e2e: collection name (default: per dataset "
                                               "and model)")
    evaluate.add_argument("--no-progress", action="store_true")
    evaluate.set_defaults(func=cmd_eval)

    training = sub.add_parser("train", help="fine-tune a backbone on a labelled folder")
    training.add_argument("dataset", help="labelled folder: labels.json or <class>/<image> folders")
    training.add_argument("--loss", choices=("hash", "triplet", "arcface"), default="hash",
                          help="hash: classifier on a sigmoid latent layer of --bits bits (its "
                               "codes serve hash_rerank); triplet (batch-hard) or arcface")
    training.add_argument("--bits", type=int, choices=(48, 64, 128, 256), default=48)
    training.add_argument("--epochs", type=int, default=10)
    training.add_argument("--batch-size", type=int, default=32)
    training.add_argument("--lr", type=float, default=1e-4,
                          help="backbone learning rate (the new heads learn 10x faster)")
    training.add_argument("--freeze", type=float, default=0.5,
                          help="fraction of the backbone's parameters, input side, kept frozen")
    training.add_argument("--patience", type=int, default=3,
                          help="stop after this many epochs without a better validation mAP")
    training.add_argument("--views", type=int, default=4,
                          help="augmented views per image cached past the frozen layers")
    training.add_argument("--val-fraction", type=float, default=0.2)
    training.add_argument("--seed", type=int, default=0)
    training.add_argument("--backbone", help="backbone name (default: settings' model.backbone)")
    training.add_argument("--weights", help="start from this weights file")
    training.add_argument("--out", help="artefact folder (default: <data_dir>/training/...)")
    training.add_argument("--protocol", choices=("all", "half"), default="all",
                          help="half: train on half of each class, then compare pretrained and "
                               "fine-tuned on the held-out half")
    training.add_argument("--register", action="store_true",
                          help="store the model in the registry (lookalike models list)")
    training.add_argument("--json", action="store_true", help="print the results as JSON")
    training.add_argument("--no-progress", action="store_true")
    training.set_defaults(func=cmd_train)

    bench = sub.add_parser("bench", help="benchmarks (results go to docs/BENCHMARKS.md)")
    bench_commands = bench.add_subparsers(dest="bench_command", required=True)
    _register_benchmarks(bench_commands)

    ui = sub.add_parser("ui", help="start the Streamlit UI")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=8501)
    ui.set_defaults(func=cmd_ui)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: typed errors become a one-line message and exit code 1."""
    args = build_parser().parse_args(argv)
    if args.command == "ingest" and not (args.demo or args.path):
        print("error: give a folder to ingest, or --demo", file=sys.stderr)
        return EXIT_ERROR
    # Milvus Lite logs a traceback for conditions this CLI reports in one line of its own
    # (a data file locked by a running server, say).
    logging.getLogger("milvus_lite").setLevel(logging.CRITICAL)
    settings = Settings()
    try:
        return int(args.func(settings, args))
    except (LookalikeError, EmbedderError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except ClientError as exc:
        hint = ""
        if exc.unreachable:
            from lookalike.services.reachability import HealthStatus, diagnose_unreachable

            why = diagnose_unreachable(exc.address, exc.tls, exc.message)
            hint = (f" ({why.detail})" if why.status is HealthStatus.TRANSPORT_MISMATCH
                    else " (is `lookalike serve` running there?)")
        print(f"error: {exc.code.name.lower()}: {exc.message}{hint}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
