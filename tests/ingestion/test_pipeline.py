"""The ingestion pipeline against real Milvus Lite and a local blob store."""

from __future__ import annotations

import shutil
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import cast

import pytest

from lookalike.app.compose import blobs_from, pipeline_from, store_from
from lookalike.core.blob_store import BlobStore
from lookalike.core.errors import ConfigError, StoreUnavailable
from lookalike.core.schemas import ImageRecord, thumb_key
from lookalike.core.settings import Settings
from lookalike.core.vector_store import MilvusVectorStore, VectorStore
from lookalike.embedder.runtime import Embedder
from lookalike.ingestion.metrics import IngestMetrics
from lookalike.ingestion.pipeline import IngestPipeline
from lookalike.ingestion.retry import RetryPolicy
from lookalike.ingestion.sources import Item, folder_items
from tests.conftest import encode, free_port, gradient_image


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


class _SlowBlobs:
    """A real local blob store whose puts take a while, recording how far reading had got."""

    def __init__(self, inner: BlobStore, pulled: list[int]) -> None:
        self.inner = inner
        self.pulled = pulled
        self.pulled_at_first_put: int | None = None
        self.max_in_flight = 0
        self.put_images = 0
        self.lock = threading.Lock()

    def put(self, key: str, data: bytes, content_type: str) -> None:
        time.sleep(0.02)
        self.inner.put(key, data, content_type)
        with self.lock:
            if key.startswith("images/"):
                self.put_images += 1
            if self.pulled_at_first_put is None:
                self.pulled_at_first_put = len(self.pulled)
            self.max_in_flight = max(self.max_in_flight, len(self.pulled) - self.put_images)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_bounded_queues_overlap_stages_and_hold_back_the_reader(
    settings: Settings, embedder: Embedder, tmp_path: Path
) -> None:
    """Reading runs ahead of slow writes (overlap) but only by the queues' bound (backpressure)."""
    root = tmp_path / "many"
    root.mkdir()
    for seed in range(48):
        (root / f"{seed:02d}.jpg").write_bytes(encode(gradient_image(32, 32, seed=seed)))
    pulled: list[int] = []

    def source() -> Iterator[Item]:
        for item in folder_items(root):
            pulled.append(1)
            yield item

    store = store_from(settings, embedder)
    blobs = _SlowBlobs(blobs_from(settings), pulled)
    pipeline = IngestPipeline(embedder, store, cast(BlobStore, blobs), batch_size=2, decode_workers=2,
                              thumbnail_px=64, write_workers=1, queue_batches=1)
    report = pipeline.run(source(), progress=False)
    assert report.added == 48
    assert blobs.pulled_at_first_put is not None
    assert blobs.pulled_at_first_put > 2
    # In flight at most: one batch being read, decoded, embedded and written, one per queue.
    assert blobs.max_in_flight <= 2 * (4 + 3)
    assert all(report.stage_seconds[s] > 0 for s in ("read", "decode", "embed", "write_blobs"))


def test_prometheus_counters_are_served_when_a_port_is_set(
    settings: Settings, embedder: Embedder, tmp_path: Path
) -> None:
    """/metrics shows images by outcome and per-stage histograms of the run."""
    root = _folder(tmp_path)
    store = store_from(settings, embedder)
    with IngestMetrics() as metrics:
        metrics.serve("127.0.0.1", port := free_port())
        pipeline_from(settings, embedder, store, blobs_from(settings), metrics).run(
            folder_items(root), progress=False
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    assert 'lookalike_ingest_images_total{outcome="added"} 5.0' in text
    assert 'lookalike_ingest_images_total{outcome="failed"} 2.0' in text
    assert 'lookalike_ingest_images_total{outcome="duplicate"} 1.0' in text
    assert 'lookalike_ingest_stage_seconds_count{stage="embed"}' in text


class _FlakyStore:
    """The real vector store, but inserts fail twice: once after landing, once before."""

    def __init__(self, inner: MilvusVectorStore) -> None:
        self.inner = inner
        self.failures = ["after", "before"]

    def insert(self, records: Sequence[ImageRecord]) -> None:
        failure = self.failures.pop(0) if self.failures else None
        if failure == "before":
            raise StoreUnavailable("Milvus insert failed: connection reset")
        self.inner.insert(records)
        if failure == "after":
            raise StoreUnavailable("Milvus insert failed: deadline exceeded (but it landed)")

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_milvus_insert_retries_without_storing_twice(
    settings: Settings, embedder: Embedder, tmp_path: Path
) -> None:
    """A failed insert is retried; one whose rows landed before the error is not inserted again."""
    root = _folder(tmp_path)
    inner = store_from(settings, embedder)
    store = _FlakyStore(inner)
    pipeline = IngestPipeline(
        embedder, cast(VectorStore, store), blobs_from(settings), batch_size=16,
        decode_workers=2, thumbnail_px=64,
        retry=RetryPolicy(initial_s=0.01, max_s=0.05, deadline_s=10),
    )
    report = pipeline.run(folder_items(root), progress=False)
    assert (report.added, report.retries) == (5, 2)
    assert inner.count() == 5


def test_a_store_that_stays_down_stops_the_run_with_its_error(
    settings: Settings, embedder: Embedder, tmp_path: Path
) -> None:
    """When retries run out the run raises StoreUnavailable (every stage thread ends)."""
    root = _folder(tmp_path)

    class DownBlobs:
        def put(self, key: str, data: bytes, content_type: str) -> None:
            raise StoreUnavailable("S3 put failed: connection refused")

    pipeline = IngestPipeline(
        embedder, store_from(settings, embedder), cast(BlobStore, DownBlobs()), batch_size=2,
        decode_workers=2, thumbnail_px=64, retry=RetryPolicy(0.01, 0.02, 0.2),
    )
    with pytest.raises(StoreUnavailable, match="still failing after"):
        pipeline.run(folder_items(root), progress=False)
    prefixes = ("ingest-", "read_", "decode_", "write_")
    assert [t.name for t in threading.enumerate() if t.name.startswith(prefixes)] == []


def test_ingest_partitions_by_predicted_class(
    settings: Settings, embedder: Embedder, demo_dir: Path
) -> None:
    """With partition_by=predicted, each image's partition key is the backbone's ImageNet top-1
    class, from the same forward pass as its descriptor; a routed image query finds the image."""
    milvus = settings.milvus.model_copy(update={"partition_by": "predicted"})
    predicted = settings.model_copy(update={"milvus": milvus})
    store = store_from(predicted, embedder)
    report = pipeline_from(predicted, embedder, store, blobs_from(predicted)).run(
        folder_items(demo_dir), progress=False)
    assert report.added == 24
    assert not report.failed
    rows = store.client.query(store.name, filter='source like "%chelsea.png"',
                              output_fields=["category", "label"])
    assert [(r["category"], r["label"]) for r in rows] in (
        [(c, "animals")] for c in ("Egyptian cat", "tabby", "tiger cat"))
    coffee = (demo_dir / "objects" / "coffee.png").read_bytes()
    outcome = embedder.embed_bytes([coffee])[0]
    assert outcome.vector is not None
    from lookalike.core.milvus.vector_index import SearchParams

    hits = store.search(outcome.vector[None, :], top_k=3,
                        params=SearchParams(mode="routed", route_top_n=1))[0]
    assert hits[0].image.source.endswith("coffee.png")
    stored = store.client.query(store.name, filter=f"id in {[h.image.id for h in hits]}",
                                output_fields=["category"])
    assert {r["category"] for r in stored} == {outcome.category}


def test_predicted_partitions_need_a_classifier(settings: Settings, embedder: Embedder) -> None:
    """Settings that partition by prediction are refused for a model without a classifier."""

    class Headless:
        predicts_categories = False
        spec = embedder.spec

    milvus = settings.milvus.model_copy(update={"partition_by": "predicted"})
    with pytest.raises(ConfigError, match="needs a backbone with an ImageNet classifier"):
        store_from(settings.model_copy(update={"milvus": milvus}), cast(Embedder, Headless()))
