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
from pathlib import Path

from lookalike.compose import blobs_from, embedder_from, engine_from, pipeline_from, store_from
from lookalike.core.errors import LookalikeError
from lookalike.core.settings import Settings
from lookalike.embedder.errors import EmbedderError
from lookalike.ingestion.pipeline import IngestReport
from lookalike.services.client import ClientError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_SOME_FILES_FAILED = 3


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
    """Ingest a folder of images."""
    from lookalike.ingestion.demo import write_demo_images
    from lookalike.ingestion.sources import folder_items

    root = write_demo_images(settings.data_dir / "demo") if args.demo else Path(args.path)
    embedder = embedder_from(settings)
    store = store_from(settings, embedder, args.collection)
    blobs = blobs_from(settings)
    items = list(folder_items(root))
    print(f"ingesting {len(items)} images from {root} into {store.name!r} "
          f"({embedder.spec.backbone}, {embedder.device})")
    report = pipeline_from(settings, embedder, store, blobs).run(
        items, total=len(items), progress=not args.no_progress
    )
    _print_report(report, Path(args.report) if args.report else None)
    return EXIT_SOME_FILES_FAILED if report.failed else EXIT_OK


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    """Serve the gRPC API until SIGINT or SIGTERM."""
    from lookalike.services.server import start_server

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("faiss").setLevel(logging.WARNING)
    server_settings = settings.server.model_copy(
        update={k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    )
    embedder = embedder_from(settings)
    store = store_from(settings, embedder)
    engine = engine_from(settings, embedder, store, blobs_from(settings))
    running = start_server(engine, server_settings)
    print(f"gRPC server on {server_settings.host}:{running.port} "
          f"(collection {store.name!r}: {store.count()} images, {embedder.spec.backbone})",
          flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    running.stop(grace_s=5.0)
    return EXIT_OK


def cmd_search(settings: Settings, args: argparse.Namespace) -> int:
    """Search the server with an image file and print a table."""
    from lookalike.services.client import LookalikeClient

    data = Path(args.image).read_bytes()
    address = args.address or settings.client.address
    with LookalikeClient(address, timeout_s=settings.client.timeout_s) as client:
        response = client.search(image=data, top_k=args.top_k, filter_expr=args.filter)
    print(f"{len(response.hits)} results in {response.took_ms:.1f} ms from {response.collection!r}")
    print(f"{'rank':>4}  {'id':>20}  {'score':>6}  {'label':<16}  source")
    for rank, hit in enumerate(response.hits, 1):
        print(f"{rank:>4}  {hit.id:>20}  {hit.score:6.3f}  {hit.label:<16}  {hit.source}")
    return EXIT_OK


def cmd_health(settings: Settings, args: argparse.Namespace) -> int:
    """Exit 0 when the server answers SERVING, 1 otherwise."""
    from lookalike.services.client import LookalikeClient

    address = args.address or settings.client.address
    with LookalikeClient(address, timeout_s=args.timeout) as client:
        serving = client.healthy()
    print(f"{address}: {'SERVING' if serving else 'NOT SERVING'}")
    return EXIT_OK if serving else EXIT_ERROR


def cmd_eval(settings: Settings, args: argparse.Namespace) -> int:
    """Evaluate retrieval on a labelled dataset."""
    from lookalike.evaluation.datasets import load_dataset
    from lookalike.evaluation.runner import eval_collection_name, evaluate

    dataset = load_dataset(Path(args.dataset))
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
BENCHMARKS: tuple[str, ...] = ()


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(prog="lookalike", description="Search by image.")
    sub = parser.add_subparsers(dest="command", required=True)

    ingest = sub.add_parser("ingest", help="ingest a folder of images (recursively)")
    ingest.add_argument("path", nargs="?", help="folder of images; its sub-folder names are labels")
    ingest.add_argument("--demo", action="store_true", help="ingest the bundled demo photographs")
    ingest.add_argument("--collection", help="collection name (default: settings)")
    ingest.add_argument("--report", help="write failed files as JSONL to this path")
    ingest.add_argument("--no-progress", action="store_true")
    ingest.set_defaults(func=cmd_ingest)

    serve = sub.add_parser("serve", help="serve the gRPC API")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(func=cmd_serve)

    search = sub.add_parser("search", help="search the server with an image file")
    search.add_argument("image")
    search.add_argument("--top-k", type=int, default=10)
    search.add_argument("--filter", default="", help='e.g. label == "beach"')
    search.add_argument("--address", help="server host:port (default: settings)")
    search.set_defaults(func=cmd_search)

    health = sub.add_parser("health", help="check that the server is serving")
    health.add_argument("--address", help="server host:port (default: settings)")
    health.add_argument("--timeout", type=float, default=2.0)
    health.set_defaults(func=cmd_health)

    evaluate = sub.add_parser("eval", help="evaluate retrieval on a labelled dataset")
    evaluate.add_argument("dataset", help="dataset folder (labels.json or groundtruth.json)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--collection", help="collection name (default: per dataset and model)")
    evaluate.add_argument("--no-progress", action="store_true")
    evaluate.set_defaults(func=cmd_eval)

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
        hint = " (is `lookalike serve` running there?)" if exc.unreachable else ""
        print(f"error: {exc.code.name.lower()}: {exc.message}{hint}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
