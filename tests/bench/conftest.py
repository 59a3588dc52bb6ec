"""A tiny dataset folder for the benchmarks' own tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import encode, gradient_image


@pytest.fixture
def tiny_sets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`<sets>/tiny/` with 24 generated JPEGs (a benchmark's `--datasets`), and the data dir
    under `tmp_path`."""
    monkeypatch.setenv("LOOKALIKE_DATA_DIR", str(tmp_path / "data"))
    folder = tmp_path / "sets" / "tiny"
    folder.mkdir(parents=True)
    for seed in range(24):
        (folder / f"{seed}.jpg").write_bytes(encode(gradient_image(120, 90, seed=seed)))
    return tmp_path / "sets"
