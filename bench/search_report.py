"""`lookalike bench search`'s report: the markdown block of its results, with each index's
vector part of memory."""

from __future__ import annotations

import argparse
from typing import Any

from bench.search_index import INDEXES

BEGIN = "<!-- bench search: begin -->"
END = "<!-- bench search: end -->"


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
