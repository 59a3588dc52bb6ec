"""`lookalike serve`: the gRPC API until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import TYPE_CHECKING

from lookalike.cli.runner import EXIT_OK

if TYPE_CHECKING:
    from lookalike.core.settings import Settings


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `serve`."""
    serve = commands.add_parser("serve", help="serve the gRPC API")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(func=cmd_serve)


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    """Serve the gRPC API until SIGINT or SIGTERM."""
    from lookalike.services.server import start_server

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("faiss").setLevel(logging.WARNING)
    server_settings = settings.server.model_copy(
        update={k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    )
    from lookalike.app.compose import (
        blobs_from,
        clean_interrupted_writes,
        collection_embedder_from,
        engine_from,
        milvus_from,
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
    milvus = milvus_from(settings)
    embedder = (query_embedder_from(settings) if settings.embed_service.address
                else collection_embedder_from(settings, blobs, milvus=milvus))
    store = store_for_spec(settings, embedder.spec, milvus=milvus, blobs=blobs)
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
