"""Bad and unusual input through `lookalike ingest`: every file ingests or is reported."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from lookalike import cli
from lookalike.app.compose import blobs_from, embedder_from, store_from
from lookalike.core.ids import content_id
from lookalike.core.settings import Settings
from tests.bad_images import MAX_PIXELS, write_corpus


def test_bad_input_corpus_gives_exactly_the_expected_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Broken files land in the JSONL report with their reasons, bombs naming the configured
    pixel limit and their size (exit 3); the rest are stored right."""
    data_dir = tmp_path / "data"
    monkeypatch.setenv("LOOKALIKE_DATA_DIR", str(data_dir))
    monkeypatch.setenv("LOOKALIKE_MODEL__BACKBONE", "efficientnet_lite0")
    monkeypatch.setenv("LOOKALIKE_MODEL__THREADS", "2")
    monkeypatch.setenv("LOOKALIKE_MODEL__MAX_PIXELS", str(MAX_PIXELS))
    corpus = write_corpus(tmp_path / "corpus")
    root, good = corpus.root, corpus.good
    report = tmp_path / "failed.jsonl"
    code = cli.main(["ingest", str(root), "--report", str(report), "--no-progress"])
    assert code == cli.EXIT_SOME_FILES_FAILED
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    assert sorted(Path(r["path"]).name for r in lines) == sorted(corpus.bad)
    for r in lines:
        assert re.fullmatch(corpus.bad[Path(r["path"]).name].reason, r["reason"]), r
    assert all(Path(r["path"]).parent == root for r in lines)

    settings = Settings()
    embedder = embedder_from(settings)
    store = store_from(settings, embedder)
    blobs = blobs_from(settings)
    assert store.count() == len(good)
    for name, (width, height) in good.items():
        data = (root / name).read_bytes()
        meta = store.get([content_id(data)[0]])[0]
        assert meta is not None, name
        assert (meta.width, meta.height) == (width, height), name
        assert blobs.get(meta.blob_key) == data, name
        with Image.open(io.BytesIO(blobs.get(meta.thumb_key))) as thumb:
            assert max(thumb.size) <= settings.ingest.thumbnail_px, name
    # The GIF's stored vector is its first frame's, not a later one's.
    gif = (root / "animated.gif").read_bytes()
    with Image.open(io.BytesIO(gif)) as animation:
        frames = []
        for index in (0, 1):
            animation.seek(index)
            frames.append(animation.convert("RGB"))
    first, second = embedder.embed_images(frames)
    stored = store.get_vectors([content_id(gif)[0]])[0]
    assert stored is not None
    assert float(first @ stored) > 0.999 > float(second @ stored)
