"""`lookalike bench burst --json`: three real servers, each in its own process, sent a burst of
uploads; their memory is read before, during and after."""

from __future__ import annotations

import json

import pytest

from bench.__main__ import main
from bench.burst import CONFIGS, noisy_jpeg, render


def test_noisy_jpeg_is_just_under_the_size_asked() -> None:
    """The payload is a real JPEG a little under the size asked for."""
    data = noisy_jpeg(1.0)
    assert data[:2] == b"\xff\xd8"
    assert 0.97 * 2**20 <= len(data) <= 2**20


def test_bench_burst_measures_each_server(capsys: pytest.CaptureFixture[str]) -> None:
    """Each configuration answers every upload and reports memory before <= peak, and the
    markdown block has one row per configuration."""
    assert main(["burst", "--clients", "4", "--mb", "0.5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [row["config"] for row in result["rows"]] == [name for name, _, _ in CONFIGS]
    for row in result["rows"]:
        assert row["codes"] == {"OK": 4}
        assert 0 < row["before_mb"] <= row["peak_mb"]
        assert row["after_mb"] > 0
    block = render(result)
    assert block.count("\n| ") == len(CONFIGS) + 1
    assert "lookalike bench burst" in block
