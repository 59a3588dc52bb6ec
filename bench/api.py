"""`lookalike bench api`: the gRPC API under concurrent load, in one run.

- batching: 16 concurrent clients each embedding one image per call, with dynamic batching on
  and off, as a ratio of the model's batch-32 forward throughput measured in the same process;
- load: 32 concurrent clients searching corel1k by image for a fixed duration: errors, p50 and
  p99 latency, and the latency left once the model's forward time is taken away (overhead).

Clients run in a separate process (threads there), so that they do not share the server's GIL.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.machine import describe_machine, print_result, replace_block
from lookalike.app.compose import blobs_from, embedder_from, engine_from, pipeline_from, store_from
from lookalike.app.ingest import ingest_items
from lookalike.core.blob_store import BlobStore
from lookalike.core.settings import ServerSettings, Settings
from lookalike.core.vector_store import MilvusVectorStore
from lookalike.embedder.runtime import Embedder
from lookalike.ingestion.sources import folder_items
from lookalike.services.client import ClientError, LookalikeClient
from lookalike.services.search import SearchEngine
from lookalike.services.server import start_server

DEFAULT_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
BEGIN = "<!-- bench api: begin -->"
END = "<!-- bench api: end -->"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `api` to `lookalike bench`."""
    parser = commands.add_parser("api", help="gRPC API: batching ratio, latency under load")
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--dataset", default="corel1k")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of the load test")
    parser.add_argument("--ratio-duration", type=float, default=20.0,
                        help="seconds of each batching on/off run")
    parser.add_argument("--clients", type=int, default=32, help="clients of the load test")
    parser.add_argument("--single-clients", type=int, default=16,
                        help="single-image clients of the batching runs")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="batching max wait")
    parser.add_argument("--engines", nargs="+", default=["torch", "onnxruntime"],
                        choices=["torch", "onnxruntime"],
                        help="engines whose search-by-image load is compared side by side")
    parser.add_argument("--engine-duration", type=float, default=30.0,
                        help="seconds of each engine's load run")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--out", type=Path, help="write the markdown block into this file")
    parser.set_defaults(func=run)


@dataclass(frozen=True, slots=True)
class Load:
    """What a client process did: one latency (and model time) per successful call."""

    seconds: float
    latencies_ms: list[float]
    embed_ms: list[float]
    queue_ms: list[float]
    errors: dict[str, int]


def drive(address: str, paths: list[str], clients: int, seconds: float, mode: str) -> Load:
    """`clients` threads calling the server in a loop for `seconds`; run in a child process.

    mode "embed": Embed one image per call; "search": Search by one image, top 10.
    """
    blobs = [Path(p).read_bytes() for p in paths]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    embed_ms: list[list[float]] = [[] for _ in range(clients)]
    queue_ms: list[list[float]] = [[] for _ in range(clients)]
    errors: dict[str, int] = {}
    stop_at = time.perf_counter() + seconds

    def client_loop(index: int) -> None:
        with LookalikeClient(address, timeout_s=60.0) as client:
            i = index
            while time.perf_counter() < stop_at:
                data = blobs[i % len(blobs)]
                i += clients
                started = time.perf_counter()
                try:
                    if mode == "embed":
                        client.embed([data])
                        model_ms = waited_ms = 0.0
                    else:
                        response = client.search(image=data, top_k=10)
                        model_ms, waited_ms = response.embed_ms, response.queue_ms
                except ClientError as exc:
                    errors[exc.code.name] = errors.get(exc.code.name, 0) + 1
                    continue
                latencies[index].append((time.perf_counter() - started) * 1000.0)
                embed_ms[index].append(model_ms)
                queue_ms[index].append(waited_ms)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client_loop, range(clients)))
    return Load(
        seconds=time.perf_counter() - started,
        latencies_ms=[x for per in latencies for x in per],
        embed_ms=[x for per in embed_ms for x in per],
        queue_ms=[x for per in queue_ms for x in per],
        errors=errors,
    )


def _in_child(address: str, paths: list[str], clients: int, seconds: float, mode: str) -> Load:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(drive, address, paths, clients, seconds, mode).result()


def forward_rate(embedder: Embedder, paths: list[Path], repeats: int = 3, batch: int = 32) -> float:
    """Images/s of the model alone (resize, normalise, network) in batches of `batch`."""
    images = [embedder.decode(p.read_bytes()) for p in paths[:64]]
    embedder.embed_images(images[:batch])  # warm-up
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        for start in range(0, len(images), batch):
            embedder.embed_images(images[start:start + batch])
        seconds.append(time.perf_counter() - started)
    return len(images) / statistics.median(seconds)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _throughput(engine: SearchEngine, server: ServerSettings, paths: list[str],
                clients: int, seconds: float) -> float:
    running = start_server(engine, server)
    try:
        load = _in_child(running.address, paths, clients, seconds, "embed")
    finally:
        running.stop(grace_s=5.0)
    if load.errors:
        raise SystemExit(f"embed calls failed: {load.errors}")
    return len(load.latencies_ms) / load.seconds


def _overhead_ms(load: Load) -> list[float]:
    """Each search's latency less the forward time of the batch that embedded its query."""
    return [lat - model for lat, model in zip(load.latencies_ms, load.embed_ms, strict=True)]


def _engine_load(settings: Settings, engine_name: str, store: MilvusVectorStore,
                 blobs: BlobStore, server: ServerSettings, names: list[str],
                 args: argparse.Namespace) -> dict[str, Any]:
    """One engine's search-by-image load over the collection already built: one client, then
    `args.clients`; the collection is shared because both engines give the same descriptors."""
    model = settings.model.model_copy(update={"engine": engine_name})
    embedder = embedder_from(settings.model_copy(update={"model": model}))
    embedder.load()
    running = start_server(engine_from(settings, embedder, store, blobs), server)
    try:
        quiet = _in_child(running.address, names, 1, args.engine_duration / 2, "search")
        load = _in_child(running.address, names, args.clients, args.engine_duration, "search")
    finally:
        running.stop(grace_s=5.0)
    return {
        "engine": embedder.engine, "batch_size": embedder.batch_size,
        "requests": len(load.latencies_ms), "errors": sum(load.errors.values()),
        "qps": round(len(load.latencies_ms) / load.seconds, 1),
        "p50_ms": round(_percentile(load.latencies_ms, 0.50), 1),
        "overhead_p50_ms": round(_percentile(_overhead_ms(load), 0.50), 1),
        "queue_p50_ms": round(_percentile(load.queue_ms, 0.50), 1),
        "model_p50_ms": round(_percentile(load.embed_ms, 0.50), 1),
        "one_client_p50_ms": round(_percentile(quiet.latencies_ms, 0.50), 1),
        "one_client_overhead_p50_ms": round(_percentile(_overhead_ms(quiet), 0.50), 1),
        "one_client_errors": sum(quiet.errors.values()),
    }


def measure(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Ingest the dataset into `settings.data_dir`, then the batching and load runs."""
    root = args.datasets / args.dataset
    root = root / "images" if (root / "images").is_dir() else root
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    embedder = embedder_from(settings)
    embedder.load()
    store = store_from(settings, embedder)
    blobs = blobs_from(settings)
    # The ingest `lookalike ingest` runs: it ends once the index covers the new rows.
    report = ingest_items(
        pipeline_from(settings, embedder, store, blobs), store, folder_items(root), total=None,
        dba=None, index_wait_s=settings.ingest.index_wait_s, progress=False,
    ).report
    engine = engine_from(settings, embedder, store, blobs)
    base = ServerSettings(host="127.0.0.1", port=0, workers=128, max_concurrent_rpcs=512,
                          batch_max_size=32, batch_max_wait_ms=args.max_wait_ms)
    names = [str(p) for p in paths]
    # The CPU may be shared: the forward rate is measured right before and after each run, and
    # each run is compared with the mean of the two around it.
    forwards = [forward_rate(embedder, paths)]
    batched = _throughput(engine, base, names, args.single_clients, args.ratio_duration)
    forwards.append(forward_rate(embedder, paths))
    unbatched = _throughput(engine, base.model_copy(update={"batching": False}), names,
                            args.single_clients, args.ratio_duration)
    forwards.append(forward_rate(embedder, paths))
    forward_batched = statistics.mean(forwards[:2])
    forward_unbatched = statistics.mean(forwards[1:])
    forward = statistics.mean(forwards)
    by_batch = {b: round(forward_rate(embedder, paths, repeats=1, batch=b), 1) for b in (1, 4, 8, 32)}
    running = start_server(engine, base)
    try:
        quiet = _in_child(running.address, names, 1, args.ratio_duration / 2, "search")
        load = _in_child(running.address, names, args.clients, args.duration, "search")
        batch_count = running.metrics.registry.get_sample_value("lookalike_embed_batch_size_count")
        batch_sum = running.metrics.registry.get_sample_value("lookalike_embed_batch_size_sum")
    finally:
        running.stop(grace_s=5.0)
    by_engine = {name: _engine_load(settings, name, store, blobs, base, names, args)
                 for name in args.engines}
    overhead = _overhead_ms(load)
    # What is left once waiting for the model is taken away too: decode, gRPC, Milvus, metadata.
    platform = [lat - model - waited for lat, model, waited
                in zip(load.latencies_ms, load.embed_ms, load.queue_ms, strict=True)]
    quiet_overhead = _overhead_ms(quiet)
    return {
        "batching_ratio": round(batched / forward_batched, 3),
        "no_batching_ratio": round(unbatched / forward_unbatched, 3),
        "forward_batch32_images_per_s": round(forward, 1),
        "forward_samples_images_per_s": [round(f, 1) for f in forwards],
        "batched_images_per_s": round(batched, 1),
        "unbatched_images_per_s": round(unbatched, 1),
        "single_clients": args.single_clients,
        "ratio_seconds": args.ratio_duration,
        "errors": sum(load.errors.values()),
        "error_codes": load.errors,
        "requests": len(load.latencies_ms),
        "qps": round(len(load.latencies_ms) / load.seconds, 1),
        "p50_ms": round(_percentile(load.latencies_ms, 0.50), 1),
        "p99_ms": round(_percentile(load.latencies_ms, 0.99), 1),
        "overhead_p50_ms": round(_percentile(overhead, 0.50), 1),
        "queue_p50_ms": round(_percentile(load.queue_ms, 0.50), 1),
        "overhead_excluding_queue_p50_ms": round(_percentile(platform, 0.50), 1),
        "model_p50_ms": round(_percentile(load.embed_ms, 0.50), 1),
        "forward_images_per_s_by_batch": by_batch,
        "one_client_p50_ms": round(_percentile(quiet.latencies_ms, 0.50), 1),
        "one_client_overhead_p50_ms": round(_percentile(quiet_overhead, 0.50), 1),
        "one_client_errors": sum(quiet.errors.values()),
        "mean_batch_under_load": round((batch_sum or 0.0) / (batch_count or 1.0), 1),
        "clients": args.clients,
        "duration_s": args.duration,
        "max_wait_ms": args.max_wait_ms,
        "images": report.seen,
        "backbone": embedder.spec.backbone,
        "engine": embedder.engine,
        "by_engine": by_engine,
        "engine_duration_s": args.engine_duration,
    }


def render(result: dict[str, Any]) -> str:
    """The markdown block for docs/BENCHMARKS.md."""
    return "\n".join([
        BEGIN,
        f"Command: `{result['command']}`  ",
        f"Machine: {result['machine']}  ",
        f"Dataset: `{result['dataset']}` ({result['images']} images), {result['backbone']}, "
        "Milvus Lite HNSW, local blobs, gRPC on loopback; clients in a separate process.",
        "",
        f"| {result['single_clients']} single-image clients, {result['ratio_seconds']:.0f} s each "
        "| images/s | ratio to batch-32 forward |",
        "|---|---|---|",
        f"| model forward alone, batch 32 (before, between, after the runs: "
        f"{result['forward_samples_images_per_s']}) | {result['forward_batch32_images_per_s']} "
        "| 1.000 |",
        f"| Embed with dynamic batching (max 32, wait {result['max_wait_ms']} ms) "
        f"| {result['batched_images_per_s']} | **{result['batching_ratio']}** |",
        f"| Embed without batching | {result['unbatched_images_per_s']} "
        f"| {result['no_batching_ratio']} |",
        "",
        f"| {result['clients']} clients searching by image for {result['duration_s']:.0f} s "
        "| requests | errors | QPS | p50 ms | p99 ms | overhead p50 ms | model p50 ms "
        "| queued for the model p50 ms | overhead less queueing p50 ms | mean batch |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| top 10 | {result['requests']} | {result['errors']} | {result['qps']} "
        f"| {result['p50_ms']} | {result['p99_ms']} | **{result['overhead_p50_ms']}** "
        f"| {result['model_p50_ms']} | {result['queue_p50_ms']} "
        f"| {result['overhead_excluding_queue_p50_ms']} | {result['mean_batch_under_load']} |",
        "",
        f"One client searching by image for {result['ratio_seconds'] / 2:.0f} s (no queueing): "
        f"p50 {result['one_client_p50_ms']} ms, overhead p50 "
        f"**{result['one_client_overhead_p50_ms']} ms**, {result['one_client_errors']} errors.",
        "",
        "Model forward alone by batch size (images/s, once, after the runs): "
        + ", ".join(f"{b}: {r}" for b, r in result["forward_images_per_s_by_batch"].items()) + ".",
        "",
        *_engine_rows(result),
        "",
        "Each ratio divides by the mean of the forward rates measured just before and after "
        "its run. Overhead is each search's client-side latency minus the forward time of the model batch "
        "that embedded its query (queueing for the batch, decoding, gRPC, Milvus and metadata "
        "included); less queueing, it also leaves out the time the query waited in the "
        "batcher's queue (the server reports both per search).",
        END,
    ])


def _engine_rows(result: dict[str, Any]) -> list[str]:
    """Engines side by side, same run: the before (torch) and after (ONNX Runtime) of a search."""
    by_engine: dict[str, dict[str, Any]] = result.get("by_engine", {})
    if not by_engine:
        return []
    rows = [
        f"Engines side by side over the same collection ({result['engine_duration_s']:.0f} s of "
        f"{result['clients']} clients each, then one client; the runs above used "
        f"`{result['engine']}`):",
        "",
        "| engine | batch | QPS | p50 ms | overhead p50 ms | queued p50 ms | model p50 ms "
        "| one client p50 ms | one client overhead p50 ms | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in by_engine.items():
        rows.append(
            f"| {name} | {row['batch_size']} | {row['qps']} | {row['p50_ms']} "
            f"| **{row['overhead_p50_ms']}** | {row['queue_p50_ms']} | {row['model_p50_ms']} "
            f"| {row['one_client_p50_ms']} | **{row['one_client_overhead_p50_ms']}** "
            f"| {row['errors'] + row['one_client_errors']} |")
    return rows


def write_block(path: Path, block: str) -> None:
    """Replace the bench-api block in `path` (or append it under an API heading)."""
    replace_block(path, BEGIN, END, block, "Benchmarks", "API")


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Measure in a temporary data dir and print (and optionally write) the result."""
    with tempfile.TemporaryDirectory(prefix="lookalike-bench-api-") as tmp:
        local = settings.model_copy(update={
            "data_dir": Path(tmp), "milvus": settings.milvus.model_copy(update={"uri": ""}),
            "blobs": settings.blobs.model_copy(update={"url": ""}),
        })
        result = measure(local, args)
    result["dataset"] = args.dataset
    result["machine"] = describe_machine()
    result["command"] = args.command_line
    print_result(result, args.json)
    if args.out:
        write_block(args.out, render(result))
    return 0
