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
import contextlib
import fcntl
import gc
import signal
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bench.machine import describe_machine, replace_block
from lookalike.core.metrics import average_precision
from lookalike.core.milvus.vector_index import SearchParams, index_params
from lookalike.core.schemas import ImageMeta, ImageRecord
from lookalike.core.settings import IndexType, MilvusSettings, Settings
from lookalike.core.vector_store import MilvusVectorStore, connect_milvus
from lookalike.embedder.hashing import learn_itq
from lookalike.embedder.local_features import LocalFeatureConfig
from lookalike.evaluation.configs import BASELINE
from lookalike.evaluation.datasets import load_dataset
from lookalike.evaluation.suite import EvalEnv, database_descriptors

F32 = NDArray[np.float32]
DEFAULT_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
BEGIN = "<!-- bench search: begin -->"
END = "<!-- bench search: end -->"
# As the test fixture: the server's embedded etcd always takes port 2380, one server at a time.
SERVER_LOCK = "/tmp/lookalike-milvus-server.lock"
COLLECTION = "bench_search"
INDEXES: tuple[IndexType, ...] = ("FLAT", "HNSW", "IVF_FLAT", "IVF_PQ")
PQ_M = 64


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


@dataclass(frozen=True, slots=True)
class Corpus:
    """Database and query vectors (unit rows), each row's category, and the PCA-reduced real
    descriptors they were grown from."""

    vectors: F32
    categories: list[str]
    queries: F32
    query_categories: list[str]
    real: F32
    real_categories: list[str]


def real_descriptors(root: Path, settings: Settings) -> tuple[F32, list[str]]:
    """Descriptors of every shared dataset's database images, and `<dataset>/<label>` each."""
    env = EvalEnv(cache_dir=settings.cache_dir, milvus=settings.milvus, local=LocalFeatureConfig(),
                  threads=settings.model.threads, ann=False)
    parts: list[F32] = []
    categories: list[str] = []
    for folder in sorted(p for p in root.iterdir() if (p / "MANIFEST.txt").is_file()):
        dataset = load_dataset(folder)
        x, labels = database_descriptors(dataset, BASELINE, env)
        parts.append(x)
        categories += [f"{dataset.name}/{label or 'none'}" for label in labels]
    if not parts:
        raise SystemExit(f"no datasets (folders with MANIFEST.txt) under {root}")
    return np.concatenate(parts), categories


def pca(x: F32, dim: int) -> F32:
    """`x` projected on its top-`dim` principal directions and renormalised."""
    centred = x.astype(np.float64) - x.mean(axis=0)
    _, vectors = np.linalg.eigh(centred.T @ centred)
    reduced = centred @ vectors[:, ::-1][:, :dim]
    return normalised(reduced)


def normalised(x: NDArray[Any]) -> F32:
    return np.asarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)


def grow(base: F32, categories: list[str], n: int, seed: int, sigma: float = 0.35) -> tuple[
        F32, list[str]]:
    """`n` perturbations of `base` rows, each mixed with a row of the same category."""
    rng = np.random.default_rng(seed)
    grouped: dict[str, list[int]] = {}
    for i, c in enumerate(categories):
        grouped.setdefault(c, []).append(i)
    members = {c: np.asarray(v) for c, v in grouped.items()}
    out = np.empty((n, base.shape[1]), dtype=np.float32)
    picked = rng.integers(0, len(base), size=n)
    step = 100_000
    for start in range(0, n, step):
        a = picked[start:start + step]
        b = np.array([rng.choice(members[categories[i]]) for i in a])
        t = rng.uniform(0.0, 0.5, size=(len(a), 1))
        noise = rng.standard_normal((len(a), base.shape[1])) * (sigma / np.sqrt(base.shape[1]))
        out[start:start + len(a)] = normalised((1 - t) * base[a] + t * base[b] + noise)
    return out, [categories[i] for i in picked]


def build_corpus(args: argparse.Namespace, settings: Settings) -> Corpus:
    x, categories = real_descriptors(args.datasets, settings)
    real = pca(x, args.dim)
    vectors, cats = grow(real, categories, args.vectors, seed=1)
    queries, query_cats = grow(real, categories, args.queries, seed=2)
    return Corpus(vectors, cats, queries, query_cats, real, categories)


# --- measurement ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Speed:
    """Queries per second one at a time (from the median latency) and in batches of 100."""

    qps_single: float
    qps_batch: float
    p50_ms: float


def measure(search: Callable[[F32], list[list[int]]], queries: F32, single: int) -> tuple[
        list[list[int]], Speed]:
    """Every query's ranked ids (answered in batches of 100) and the speed of `search`."""
    search(queries[:2])  # warm up
    latencies = []
    for q in queries[:single]:
        started = time.perf_counter()
        search(q[None])
        latencies.append(time.perf_counter() - started)
    ranked: list[list[int]] = []
    started = time.perf_counter()
    for start in range(0, len(queries), 100):
        ranked += search(queries[start:start + 100])
    batch_s = time.perf_counter() - started
    p50 = statistics.median(latencies)
    return ranked, Speed(1.0 / p50, len(queries) / batch_s, p50 * 1000)


def recall_at(ranked: list[list[int]], exact: NDArray[np.int64], k: int = 10) -> float:
    hits = [len(set(r[:k]) & set(e[:k].tolist())) / k for r, e in zip(ranked, exact, strict=True)]
    return float(np.mean(hits))


def faiss_baseline(corpus: Corpus, single: int) -> tuple[NDArray[np.int64], Speed]:
    """Exact top-1000 of every query (faiss IndexFlatIP), and faiss's speed at top-10."""
    import faiss

    index = faiss.IndexFlatIP(corpus.vectors.shape[1])
    index.add(corpus.vectors)
    exact = np.asarray(index.search(corpus.queries, 1000)[1], dtype=np.int64)

    def search(q: F32) -> list[list[int]]:
        return [row.tolist() for row in index.search(q, 10)[1]]

    return exact, measure(search, corpus.queries, single)[1]


# --- the Milvus server -----------------------------------------------------------------------


class Server:
    """A Milvus 2.3 standalone server in `base_dir`, restartable over the same data."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self._server: Any = None

    def start(self) -> str:
        from milvus import MilvusServer

        self._server = MilvusServer(wait_for_started=True)
        self._server.set_base_dir(str(self.base_dir))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            self._server.start()
            gc.collect()
        return f"http://127.0.0.1:{self._server.listen_port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def memory(self) -> Memory:
        """Resident memory of the server process, with its anonymous part."""
        pid = self._server.server_proc.pid
        fields = {}
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon"):
                fields[key] = int(value.split()[0]) * 1024
        return Memory(rss=fields.get("VmRSS", 0), anon=fields.get("RssAnon", 0))


@dataclass(frozen=True, slots=True)
class Memory:
    """A process's resident bytes: all of them, and the anonymous ones (not file-backed)."""

    rss: int
    anon: int

    def growth(self, before: Memory) -> Memory:
        """What was added since `before` (nothing where it shrank)."""
        return Memory(rss=max(0, self.rss - before.rss), anon=max(0, self.anon - before.anon))

    def since(self, before: Memory) -> dict[str, int]:
        """Growth since `before`, as the `*_after_bytes` columns."""
        grown = self.growth(before)
        return {"memory_after_bytes": grown.rss, "anon_after_bytes": grown.anon}


@contextlib.contextmanager
def milvus_server(base_dir: Path) -> Iterator[Server]:
    with open(SERVER_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        server = Server(base_dir)
        try:
            yield server
        finally:
            server.stop()


def settings_for(uri: str, index_type: IndexType, pq_m: int = PQ_M,
                 hash_floats: bool = True) -> MilvusSettings:
    return MilvusSettings(
        uri=uri, index_type=index_type, hnsw_m=16, hnsw_ef_construction=128, search_ef=64,
        ivf_nlist=1024, ivf_nprobe=16, pq_m=pq_m, pq_nbits=8, partition_by="label",
        num_partitions=64, hash_nlist=1024, hash_nprobe=16, hash_floats=hash_floats,
        route_top_n=3, timeout_s=600,
    )


def records(corpus: Corpus, start: int, stop: int) -> list[ImageRecord]:
    return [
        ImageRecord(
            meta=ImageMeta(id=i + 1, sha256=f"{i + 1:064x}", blob_key=f"images/{i + 1:064x}.jpg",
                           source="bench", label=corpus.categories[i], tags=(), meta={},
                           width=0, height=0, ingested_at=0),
            embedding=corpus.vectors[i],
        )
        for i in range(start, stop)
    ]


def open_store(uri: str, index_type: IndexType, dim: int, create: bool = False,
               pq_m: int = PQ_M, hash_floats: bool = True) -> tuple[Any, MilvusVectorStore]:
    settings = settings_for(uri, index_type, pq_m, hash_floats)
    client = connect_milvus(uri, settings)
    spec = {"bench": "search", "dim": dim}
    return client, MilvusVectorStore.open(client, COLLECTION, spec, dim, settings, create=create)


def rebuild_index(client: Any, store: MilvusVectorStore, index_type: IndexType, dim: int,
                  pq_m: int = PQ_M) -> float:
    """Drop the float index and build `index_type`; seconds it took to build."""
    physical = store.layout(refresh=True).physical
    client.release_collection(physical)
    client.drop_index(physical, "embedding")
    kind, params = index_params(settings_for("http://x", index_type, pq_m), dim)
    indexes = client.prepare_index_params()
    indexes.add_index(field_name="embedding", index_type=kind, metric_type="IP", params=params)
    started = time.perf_counter()
    client.create_index(physical, indexes)
    store.seal(timeout_s=3600)
    return time.perf_counter() - started


def loaded_memory(server: Server, uri_holder: list[str], collections: list[str]) -> tuple[
        Memory, Memory]:
    """Restart the server, load `collections`; the resident memory they added (all of it and
    the anonymous part), and the server's memory before loading them."""
    # Released first: a restarted server loads again what was loaded when it stopped.
    client = connect_milvus(uri_holder[0], MilvusSettings(uri=uri_holder[0], timeout_s=600))
    for name in client.list_collections():
        client.release_collection(name)
    client.close()
    server.stop()
    uri_holder[0] = server.start()
    time.sleep(3)
    client = connect_milvus(uri_holder[0], MilvusSettings(uri=uri_holder[0], timeout_s=600))
    # A restarted server's data node registers late, and writes after this (the hash codes)
    # would fail until it has: a flush goes through once it is there.
    for name in collections:
        when_ready(partial(client.flush, name), f"flush {name}")
    before = server.memory()
    for name in collections:
        when_ready(partial(client.load_collection, name), f"load {name}")
    grown = settled(server.memory).growth(before)
    client.close()
    return grown, before


def settled(read: Callable[[], Memory], every_s: float = 1.0, window: int = 5,
            tolerance: float = 0.01, timeout_s: float = 120.0) -> Memory:
    """`read()` once it has stopped moving: the last `window` readings, `every_s` apart, within
    `tolerance` of each other (a load's buffers are freed a while after the load returns: 3.06
    GB five seconds after loading a 1M FLAT collection, 1.69 GB later); the last reading."""
    readings = [read()]
    deadline = time.monotonic() + timeout_s
    while not is_steady([m.rss for m in readings[-window:]], window, tolerance) \
            and time.monotonic() < deadline:
        time.sleep(every_s)
        readings.append(read())
    return readings[-1]


def is_steady(values: list[int], window: int, tolerance: float) -> bool:
    """Whether there are `window` values and they lie within `tolerance` of their largest."""
    return len(values) >= window and max(values) - min(values) <= tolerance * max(values)


def when_ready(call: Callable[[], object], what: str, timeout_s: float = 300.0) -> None:
    """`call()`, again every 5 s while it fails: a server just restarted refuses loads until
    its query node has registered, and flushes until its data node has."""
    from pymilvus.exceptions import MilvusException

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            call()
            return
        except MilvusException as exc:
            if time.monotonic() > deadline:
                raise
            print(f"{what}: {exc.message.splitlines()[0]}; retrying", file=sys.stderr)
            time.sleep(5)


def modes_for(index_type: IndexType, efs: list[int], reranks: list[int]) -> list[
        tuple[str, SearchParams]]:
    """The search modes measured on one index: HNSW at each search list size, IVF_PQ alone
    and re-scored in float at each depth, routed search on FLAT and HNSW."""
    modes: list[tuple[str, SearchParams]] = [("ann", SearchParams())]
    if index_type == "HNSW":
        modes = [(f"ann ef={ef}", SearchParams(ef=ef)) for ef in efs]
    if index_type == "IVF_PQ":
        modes = [("ann, no re-rank", SearchParams(rerank_factor=1)),
                 *((f"ann + float re-rank x{r}", SearchParams(rerank_factor=r)) for r in reranks)]
    if index_type in ("FLAT", "HNSW"):
        modes.append(("routed top-3", SearchParams(mode="routed")))
    return modes


def ids_of(hits: list[list[Any]]) -> list[list[int]]:
    return [[h.id - 1 for h in per_query] for per_query in hits]


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


def searcher(store: MilvusVectorStore, params: SearchParams) -> Callable[[F32], list[list[int]]]:
    """Top-10 row numbers per query through the vector store, with these parameters."""
    def search(q: F32) -> list[list[int]]:
        return ids_of(store.search_ids(q, 10, params=params))
    return search


def time_one(store: MilvusVectorStore, query: F32, top_k: int, params: SearchParams) -> float:
    """Seconds one query for `top_k` results takes."""
    started = time.perf_counter()
    store.search_ids(query[None], top_k, params=params)
    return time.perf_counter() - started


def hash_mode_name(bits: int, floats: bool) -> str:
    """The hash_rerank row's mode: where its candidates' floats come from."""
    return (f"hash_rerank {bits} bits, r=10, "
            + ("floats in codes" if floats else "floats fetched"))


def corel_hash_map(corpus: Corpus, bits: int, top_k: int = 100, factor: int = 3) -> dict[str, Any]:
    """mAP@top_k on corel1k alone (1,000 real descriptors, each queries the rest): exact float
    ranking against Hamming top-(top_k x factor) re-ranked in float, ITQ learned on corel1k."""
    rows = [i for i, c in enumerate(corpus.real_categories) if c.startswith("corel1k/")]
    x = corpus.real[rows]
    labels = np.array([corpus.real_categories[i] for i in rows])
    itq = learn_itq(x, bits, seed=0)
    codes = np.unpackbits(itq.encode(x), axis=1).astype(np.int16)
    hamming = (codes[:, None, :] != codes[None, :, :]).sum(axis=2)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    np.fill_diagonal(hamming, 10**6)
    float_aps, hash_aps = [], []
    for q in range(len(x)):
        relevant = labels == labels[q]
        relevant[q] = False
        n_relevant = min(int(relevant.sum()), top_k)
        exact = np.argsort(-sims[q], kind="stable")[:top_k]
        candidates = np.argsort(hamming[q], kind="stable")[:top_k * factor]
        reranked = candidates[np.argsort(-sims[q, candidates], kind="stable")][:top_k]
        float_aps.append(average_precision(relevant[exact].tolist(), n_relevant))
        hash_aps.append(average_precision(relevant[reranked].tolist(), n_relevant))
    float_map, hash_map = float(np.mean(float_aps)), float(np.mean(hash_aps))
    return {"bits": bits, "top_k": top_k, "candidates": top_k * factor,
            "float_map": round(float_map, 4), "hash_rerank_map": round(hash_map, 4),
            "ratio": round(hash_map / float_map, 4)}


def vector_parts(rows: list[dict[str, Any]]) -> tuple[int, dict[str, int]]:
    """The collection's memory that is not its float index, estimated as Milvus FLAT's memory
    less the raw vectors it holds (faiss's bytes), and each index's memory less that: its
    vector part. Every index carries the same metadata fields; only the vector part changes."""
    flat_bytes = rows[0]["memory_bytes"]
    flat = next((r for r in rows if r["index"] == "FLAT"), None)
    if flat is None:
        return 0, {}
    metadata = max(0, flat["memory_bytes"] - flat_bytes)
    return metadata, {r["index"]: r["memory_bytes"] - metadata for r in rows[1:]
                      if r["index"] not in ("FLAT", "BIN_IVF_FLAT")}


def render(result: dict[str, Any], args: argparse.Namespace) -> str:
    rows = result["rows"]
    columns = ["index", "mode", "recall@10", "qps", "qps_batch100", "p50_ms", "top1000_ms",
               "memory_bytes", "anon_bytes", "memory_vs_flat", "memory_after_bytes",
               "anon_after_bytes",
               "build_s"]
    lines = [
        BEGIN,
        f"`lookalike bench search --vectors {args.vectors} --dim {args.dim} --ef "
        f"{' '.join(map(str, args.ef))} --pq-m {args.pq_m} --rerank "
        f"{' '.join(map(str, args.rerank))}"
        + ("" if tuple(args.indexes) == INDEXES else f" --indexes {' '.join(args.indexes)}")
        + f"` ({result['seconds']} s) on {result['machine']}; Milvus 2.3.5 standalone "
        "(PyPI `milvus`), faiss-cpu 1.15.1.",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    corel = result["corel1k_map"]
    metadata, parts = vector_parts(rows)
    if parts:
        lines += ["", f"Metadata fields (Milvus FLAT's memory less faiss's vector bytes): "
                  f"{metadata} bytes. Vector part (an index's memory less that): " + "; ".join(
                      f"{index} {part} ({part / rows[0]['memory_bytes']:.3f} of flat)"
                      for index, part in parts.items()) + "."]
    lines += [
        "",
        f"faiss IndexFlatIP: {rows[0]['qps']} QPS single, {rows[0]['qps_batch100']} QPS in "
        "batches of 100 (the `qps_flat` of every row).",
        f"corel1k mAP@{corel['top_k']} ({corel['bits']}-bit ITQ, Hamming top {corel['candidates']} "
        f"then float): float {corel['float_map']}, hash_rerank {corel['hash_rerank_map']} "
        f"(ratio {corel['ratio']}).",
        END,
    ]
    return "\n".join(lines)
