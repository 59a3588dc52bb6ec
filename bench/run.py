"""`make bench`: ingestion and search through gRPC on a real dataset (embedding speed per
backbone and device is `lookalike bench embed`).

Prints markdown (command, machine, tables) to paste into docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.machine import describe_machine
from lookalike.app.compose import blobs_from, embedder_from, engine_from, pipeline_from, store_from
from lookalike.app.ingest import ingest_items
from lookalike.core.ids import content_id
from lookalike.core.settings import ModelSettings, ServerSettings, Settings
from lookalike.ingestion.sources import folder_items
from lookalike.services.client import LookalikeClient
from lookalike.services.server import start_server


def bench_ingest_and_search(dataset: Path, queries: int) -> list[str]:
    """Ingest a dataset with the default model, then search it through gRPC."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), model=ModelSettings(threads=2))
        embedder = embedder_from(settings)
        store = store_from(settings, embedder)
        blobs = blobs_from(settings)
        items = list(folder_items(dataset))
        # The ingest `lookalike ingest` runs: it ends once the index covers the new rows.
        report = ingest_items(
            pipeline_from(settings, embedder, store, blobs), store, items, total=None, dba=None,
            index_wait_s=settings.ingest.index_wait_s, progress=False,
        ).report
        server = start_server(engine_from(settings, embedder, store, blobs),
                              ServerSettings(host="127.0.0.1", port=0))
        try:
            with LookalikeClient(server.address) as client:
                ids = [content_id(i.read())[0] for i in items[:queries]]
                by_id = _latencies(lambda i: client.search(image_id=ids[i], top_k=10), len(ids))
                data = [i.read() for i in items[: max(1, queries // 4)]]
                by_image = _latencies(lambda i: client.search(image=data[i], top_k=10), len(data))
        finally:
            server.stop(grace_s=1.0)
    return [
        f"Ingest: {report.seen} images of `{dataset.parent.name}` in {report.seconds:.1f} s = "
        f"**{report.images_per_s:.1f} images/s** end to end (read, hash, decode, embed, "
        f"blobs + Milvus Lite; {embedder.spec.backbone}).",
        "",
        "| search (top 10, Milvus Lite HNSW, gRPC on loopback) | queries | median ms | p95 ms "
        "| QPS (1 client) |",
        "|---|---|---|---|---|",
        _latency_row("by stored id", by_id),
        _latency_row("by image bytes (embeds the query)", by_image),
    ]


def _latencies(call: Callable[[int], object], n: int) -> list[float]:
    out = []
    for i in range(n):
        started = time.perf_counter()
        call(i)
        out.append((time.perf_counter() - started) * 1000.0)
    return out


def _latency_row(name: str, ms: list[float]) -> str:
    ordered = sorted(ms)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return (f"| {name} | {len(ms)} | {statistics.median(ms):.1f} | {p95:.1f} | "
            f"{1000.0 * len(ms) / sum(ms):.0f} |")


def main() -> None:
    """Run the benchmarks and print markdown."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datasets", type=Path, required=True)
    parser.add_argument("--dataset", default="corel1k")
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    root = args.datasets / args.dataset / "images"
    print("Command: `make bench`  ")
    print(f"Machine: {describe_machine()}\n")
    print("\n".join(bench_ingest_and_search(root, args.queries)))


if __name__ == "__main__":
    main()
