"""`lookalike bench search`'s pure parts: which modes each index is measured in, and memory
growth. (The benchmark itself needs its own Milvus server and a million vectors: `make bench`.)"""

from __future__ import annotations

from bench.search import Memory, modes_for, vector_parts
from lookalike.core.vector_index import SearchParams


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
