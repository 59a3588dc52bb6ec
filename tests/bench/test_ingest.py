"""`lookalike bench ingest --json`: forward-only, the pipeline and the naive loop for each engine,
round by round, on generated JPEGs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.__main__ import main


def test_bench_ingest_measures_every_engine_side_by_side(
    tiny_sets: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """Both engines ingest every image; each has its rates and its ratio to the one naive eager
    torch loop, and the run says how much faster ONNX Runtime went."""
    code = main(["ingest", "--datasets", str(tiny_sets), "--sets", "tiny",
                 "--naive", "4", "--repeats", "1", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 24
    assert list(result["engines"]) == ["torch", "onnxruntime"]
    for engine in result["engines"].values():
        assert (engine["added"], engine["failed"]) == (24, 0)
        for key in ("images_per_s", "forward_only_images_per_s", "speedup_vs_naive_torch"):
            assert engine[key] > 0
    assert result["naive_torch_images_per_s"] > 0
    assert len(result["naive_rounds"]) == 1
    assert result["onnxruntime_over_torch"] > 0
