"""`lookalike bench routing --json`: both routers at each top_n, searched through a real Milvus
Lite collection partitioned by predicted class, on generated images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.__main__ import main


def test_bench_routing_compares_both_routers_against_exact(
    tiny_sets: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """Routing to every category finds everything exact search finds; to one, a share of it."""
    code = main(["routing", "--datasets", str(tiny_sets), "--sets", "tiny",
                 "--top-n", "1", "1000", "--json"])
    assert code == 0
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["router"], r["top_n"]) for r in results] == [
        ("means", 1), ("classifier", 1), ("means", 1000), ("classifier", 1000)]
    for result in results:
        assert (result["images"], result["queries"]) == (18, 6)
        assert 0 < result["share_scanned"] <= 1
        assert 0 <= result["recall@10"] <= 1
    for result in results[2:]:
        assert (result["recall@10"], result["top1_found"], result["share_scanned"]) == (1.0, 1.0, 1.0)
    # Generated gradients fall into several ImageNet classes, so one route scans a part.
    assert results[0]["categories"] > 1
    assert results[0]["share_scanned"] < 1
