"""`lookalike bench search`: vector search at a million images, on a real Milvus server, side by
side with faiss `IndexFlatIP` (exact) on the same vectors, in one run.

Vectors: the real descriptors of the shared datasets (the default model), PCA-reduced to `dim`,
then grown to `vectors` rows by deterministic perturbations: each row mixes an image with
another of its category (weight up to 1/2) and adds gaussian noise, then is renormalised; its
category is the image's dataset and class. Queries are drawn the same way with another seed.
Ground truth is faiss's exact top-k.

For each index (FLAT, HNSW, IVF_FLAT, IVF_PQ) the collection's index is rebuilt and the server
restarted, so that `memory_bytes` (the server's resident memory after loading the collection,
less before; `anon_bytes` its anonymous part) belongs to that index alone. `memory_after_bytes`
is the same difference read again after that mode's searches (cumulative over an index's
modes): a float re-rank reads raw vectors, which the query node pages in as it needs them;
`anon_after_bytes` is its anonymous part, the rest being file-backed pages (the query node's
chunk cache) that the kernel can reclaim. HNSW is searched at each `--ef`, IVF_PQ alone and
re-scored at each `--rerank` depth. Each index and mode reports recall@10 against exact,
QPS for single queries and for batches of 100, and faiss's QPS in the same form (`qps_flat`).
hash_rerank (ITQ codes, Hamming top k x r, exact float re-rank) and routed (the query's nearest
categories' partitions only) run through the same vector store as the product; hash_rerank twice
with the same codes: its candidates' floats fetched from the collection by id, then kept in the
codes collection (`hash_floats`, one round trip), each with the codes collection's memory. Finally the mAP
of hash_rerank against float search on corel1k alone.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

from bench.machine import describe_machine, replace_block
from bench.search_corpus import build_corpus
from bench.search_index import (
    INDEXES,
    PQ_M,
    hash_mode_name,
    modes_for,
    open_store,
    rebuild_index,
    records,
    searcher,
    time_one,
)
from bench.search_measure import Speed, corel_hash_map, faiss_baseline, measure, recall_at
from bench.search_report import BEGIN, END, render
from bench.search_server import loaded_memory, milvus_server, when_ready
from lookalike.core.milvus.vector_index import SearchParams
from lookalike.core.settings import Settings
from lookalike.embedder.hashing import learn_itq

# bench.codes_floats starts its server and reads its memory with these, as this benchmark does.
__all__ = ["loaded_memory", "milvus_server", "register", "run"]

DEFAULT_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `search` to `lookalike bench`."""
    parser = commands.add_parser(
        "search", help="1M vectors on a real Milvus server vs faiss flat: recall, QPS, memory"
    )
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=1000, help="queries in batches of 100")
    parser.add_argument("--single", type=int, default=200, help="queries sent one at a time")
    parser.add_argument("--bits", type=int, default=256, choices=(64, 128, 256))
    parser.add_argument("--indexes", nargs="+", default=list(INDEXES), choices=INDEXES)
    parser.add_argument("--rerank", nargs="+", type=int, default=[4, 10],
                        help="IVF_PQ: re-score the top k x r in float, one mode per r")
    parser.add_argument("--ef", nargs="+", type=int, default=[64, 32],
                        help="HNSW: the search list size, one mode per value")
    parser.add_argument("--pq-m", type=int, default=PQ_M,
                        help="IVF_PQ: sub-quantisers (dim must be a multiple), 8 bits each")
    parser.add_argument("--json", action="store_true", help="one JSON object per index and mode")
    parser.add_argument("--out", type=Path, help="write the markdown block into this file")
    parser.set_defaults(func=run)


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Build the corpus, measure faiss and every Milvus index and mode, print the results."""
    started = time.perf_counter()
    # A SIGTERM (timeout, Ctrl-C in a pod) unwinds, so that the Milvus server is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(f"machine: {describe_machine()}", file=sys.stderr)
    corpus = build_corpus(args, settings)
    print(f"corpus: {len(corpus.vectors)} x {args.dim} from {len(corpus.real)} real descriptors, "
          f"{len(set(corpus.categories))} categories ({time.perf_counter() - started:.0f} s)",
          file=sys.stderr)
    hash_map = corel_hash_map(corpus, args.bits)
    exact, faiss_speed = faiss_baseline(corpus, args.single)
    flat_bytes = corpus.vectors.nbytes
    rows: list[dict[str, Any]] = [{
        "index": "faiss IndexFlatIP", "mode": "exact", "recall@10": 1.0,
        "qps": round(faiss_speed.qps_single, 1), "qps_batch100": round(faiss_speed.qps_batch, 1),
        "qps_flat": round(faiss_speed.qps_single, 1),
        "qps_flat_batch100": round(faiss_speed.qps_batch, 1), "p50_ms": round(faiss_speed.p50_ms, 2),
        "memory_bytes": flat_bytes,
    }]

    def add(index: str, mode: str, ranked: list[list[int]], speed: Speed, memory: int,
            extra: dict[str, Any] | None = None) -> None:
        row = {
            "index": index, "mode": mode, "recall@10": round(recall_at(ranked, exact), 4),
            "qps": round(speed.qps_single, 1), "qps_batch100": round(speed.qps_batch, 1),
            "qps_flat": rows[0]["qps"], "qps_flat_batch100": rows[0]["qps_batch100"],
            "p50_ms": round(speed.p50_ms, 2), "memory_bytes": memory,
            "memory_vs_flat": round(memory / flat_bytes, 3),
            **(extra or {}),
        }
        rows.append(row)
        print(row, file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="lookalike-bench-search-",
                                     dir=settings.cache_dir if settings.cache_dir.is_dir() else None
                                     ) as tmp, milvus_server(Path(tmp)) as server:
        uri = [server.start()]
        client, store = open_store(uri[0], "FLAT", args.dim, create=True)
        t0 = time.perf_counter()
        for start in range(0, len(corpus.vectors), 5000):
            store.insert(records(corpus, start, min(start + 5000, len(corpus.vectors))))
        store.seal(timeout_s=3600)
        print(f"inserted {len(corpus.vectors)} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        physical = store.layout().physical
        for index_type in args.indexes:
            build_s = 0.0 if index_type == "FLAT" else rebuild_index(
                client, store, index_type, args.dim, args.pq_m)
            client.close()
            memory, baseline = loaded_memory(server, uri, [physical])
            client, store = open_store(uri[0], index_type, args.dim, pq_m=args.pq_m)
            for mode, params in modes_for(index_type, args.ef, args.rerank):
                ranked, speed = measure(searcher(store, params), corpus.queries, args.single)
                top1000 = [time_one(store, q, 1000, params) for q in corpus.queries[:20]]
                add(index_type, mode, ranked, speed, memory.rss,
                    {"build_s": round(build_s, 1), "anon_bytes": memory.anon,
                     "top1000_ms": round(statistics.median(top1000) * 1000, 1),
                     **server.memory().since(baseline)})
            if index_type == "FLAT":
                itq = learn_itq(corpus.vectors[::10], args.bits, seed=0)
                # Both ways to the candidates' floats, same codes: fetched from the collection
                # by id (two round trips), and kept in the codes collection (one).
                for floats in (False, True):
                    client.close()
                    client, store = open_store(uri[0], "FLAT", args.dim, hash_floats=floats)
                    t0 = time.perf_counter()
                    store.build_codes(itq)
                    store.seal(timeout_s=3600)
                    codes_s = time.perf_counter() - t0
                    client.close()
                    codes_memory, codes_baseline = loaded_memory(server, uri,
                                                                 [physical + "__codes"])
                    client, store = open_store(uri[0], "FLAT", args.dim, hash_floats=floats)
                    when_ready(partial(client.load_collection, physical), f"load {physical}")
                    store.use_encoder(itq)
                    hashed = SearchParams(mode="hash_rerank", rerank_factor=10)
                    ranked, speed = measure(searcher(store, hashed), corpus.queries, args.single)
                    add("BIN_IVF_FLAT", hash_mode_name(args.bits, floats), ranked, speed,
                        codes_memory.rss, {
                            "build_s": round(codes_s, 1), "anon_bytes": codes_memory.anon,
                            **server.memory().since(codes_baseline),
                            "corel1k_map_ratio": hash_map["ratio"],
                            "qps_vs_milvus_flat": round(speed.qps_single / rows[1]["qps"], 2),
                            "qps_batch_vs_milvus_flat": round(
                                speed.qps_batch / rows[1]["qps_batch100"], 2)})
        client.close()
    result = {"rows": rows, "corel1k_map": hash_map, "machine": describe_machine(),
              "seconds": round(time.perf_counter() - started)}
    if args.json:
        import json

        for row in rows:
            print(json.dumps(row))
    else:
        print(render(result, args))
    if args.out:
        replace_block(args.out, BEGIN, END, render(result, args), "Benchmarks", "Vector search at 1M")
    return 0
