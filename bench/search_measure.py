"""`lookalike bench search`'s measures: speed and recall of any search function, the faiss exact
baseline, and hash_rerank's mAP on corel1k."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bench.search_corpus import F32, Corpus
from lookalike.core.metrics import average_precision
from lookalike.embedder.hashing import learn_itq


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
