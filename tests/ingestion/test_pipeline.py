"""The ingestion pipeline against real Milvus Lite and a local blob store."""

from __future__ import annotations

import shutil
from pathlib import Path

from lookalike.compose import blobs_from, pipeline_from, store_from
from lookalike.core.schemas import thumb_key
from lookalike.core.settings import Settings
from lookalike.embedder.runtime import Embedder
from lookalike.ingestion.sources import folder_items
from tests.conftest import encode, gradient_image


def _folder(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for label, seeds in (("red", (1, 2, 3)), ("blue", (4, 5))):
        (root / label).mkdir(parents=True)
        for s in seeds:
            (root / label / f"{s}.jpg").write_bytes(encode(gradient_image(seed=s)))
    (root / "red" / "copy-of-1.jpg").write_bytes((root / "red" / "1.jpg").read_bytes())
    (root / "blue" / "broken.jpg").write_bytes(b"this is text, not a jpeg")
    (root / "blue" / "empty.png").write_bytes(b"")
    return root


def test_ingest_is_idempotent_and_reports_bad_files(
    settings: Settings, embedder: Embedder, tmp_path: Path
) -> None:
    """Good files are stored once with blobs first; bad ones are listed; a rerun adds nothing."""
    root = _folder(tmp_path)
    store = store_from(settings, embedder)
    blobs = blobs_from(settings)
    pipeline = pipeline_from(settings, embedder, store, blobs)
    pipeline.batch_size = 3  # several batches, so duplicates cross batch boundaries
    report = pipeline.run(folder_items(root), progress=False)
    assert (report.seen, report.added, report.duplicates) == (8, 5, 1)
    assert sorted((Path(f.source).name, f.reason) for f in report.failed) == [
        ("broken.jpg", "not a recognised image format"), ("empty.png", "empty file (0 bytes)"),
    ]
    assert store.count() == 5
    query = embedder.embed_bytes([(root / "blue" / "4.jpg").read_bytes()])[0].vector
    assert query is not None
    hits = store.search(query[None, :], top_k=1)[0]
    image = hits[0].image
    assert image.label == "blue"
    assert Path(image.source).name == "4.jpg"
    assert blobs.get(image.blob_key) == (root / "blue" / "4.jpg").read_bytes()
    assert blobs.exists(thumb_key(image.sha256))
    again = pipeline.run(folder_items(root), progress=False)
    # The copy of 1.jpg now finds its bytes stored too.
    assert (again.added, again.already_stored, again.duplicates) == (0, 6, 0)
    assert store.count() == 5


def test_moved_files_are_not_stored_twice(
    settings: Settings, embedder: Embedder, tmp_path: Path
) -> None:
    """The id comes from the bytes, so the same images under new paths add nothing."""
    root = _folder(tmp_path)
    store = store_from(settings, embedder)
    pipeline = pipeline_from(settings, embedder, store, blobs_from(settings))
    pipeline.run(folder_items(root), progress=False)
    moved = tmp_path / "moved"
    shutil.copytree(root, moved)
    assert pipeline.run(folder_items(moved), progress=False).added == 0
    assert store.count() == 5
