"""`lookalike bench search`'s pure parts: which modes each index is measured in, and memory
growth. (The benchmark itself needs its own Milvus server and a million vectors: `make bench`.)"""

from __future__ import annotations

import argparse

from bench.search_index import INDEXES, modes_for
from bench.search_report import render, vector_parts
from bench.search_server import Memory, is_steady, settled
from lookalike.core.milvus.vector_index import SearchParams


def test_each_index_is_measured_in_its_modes() -> None:
    assert modes_for("FLAT", [64, 32], [4, 10]) == [
        ("ann", SearchParams()), ("routed top-3", SearchParams(mode="routed"))]
    assert modes_for("HNSW", [64, 32], [4, 10]) == [
        ("ann ef=64", SearchParams(ef=64)), ("ann ef=32", SearchParams(ef=32)),
        ("routed top-3", SearchParams(mode="routed"))]
    assert modes_for("IVF_FLAT", [64], [4]) == [("ann", SearchParams())]
    assert modes_for("IVF_PQ", [64], [4, 10]) == [
        ("ann, no re-rank", SearchParams(rerank_factor=1)),
        ("ann + float re-rank x4", SearchParams(rerank_factor=4)),
        ("ann + float re-rank x10", SearchParams(rerank_factor=10))]


def test_memory_growth_never_goes_below_zero() -> None:
    before = Memory(rss=1000, anon=600)
    assert Memory(rss=1500, anon=500).since(before) == {
        "memory_after_bytes": 500, "anon_after_bytes": 0}


def test_vector_part_is_an_index_memory_less_the_shared_metadata() -> None:
    rows = [{"index": "faiss IndexFlatIP", "memory_bytes": 1000},
            {"index": "FLAT", "memory_bytes": 1600}, {"index": "FLAT", "memory_bytes": 1600},
            {"index": "BIN_IVF_FLAT", "memory_bytes": 150},
            {"index": "HNSW", "memory_bytes": 1750}, {"index": "IVF_PQ", "memory_bytes": 700}]
    assert vector_parts(rows) == (600, {"HNSW": 1150, "IVF_PQ": 100})
    assert vector_parts(rows[:1]) == (0, {})


def test_memory_is_read_once_it_stops_moving() -> None:
    assert not is_steady([100, 100], 3, 0.01)
    assert not is_steady([300, 200, 200], 3, 0.01)
    assert is_steady([1000, 995, 1000], 3, 0.01)
    falling = iter([3000, 2500, 1700, 1690, 1690, 1690, 1690])
    reading = settled(lambda: Memory(rss=next(falling), anon=0), every_s=0, window=3)
    assert reading.rss == 1690


def test_the_printed_command_names_the_indexes_when_not_all() -> None:
    args = argparse.Namespace(vectors=1000, dim=256, ef=[64], pq_m=64, rerank=[4],
                              indexes=list(INDEXES))
    result = {"rows": [{"index": "faiss IndexFlatIP", "mode": "exact", "memory_bytes": 1,
                        "qps": 1.0, "qps_batch100": 2.0}],
              "corel1k_map": {"top_k": 100, "bits": 256, "candidates": 300, "float_map": 0.8,
                              "hash_rerank_map": 0.8, "ratio": 1.0},
              "seconds": 1, "machine": "here"}
    assert "--rerank 4` (1 s)" in render(result, args)
    args.indexes = ["IVF_PQ"]
    assert "--rerank 4 --indexes IVF_PQ` (1 s)" in render(result, args)
