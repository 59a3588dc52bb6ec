"""Browsing through the API against a real gRPC server over the demo photos: search narrowed by
labels and tags, paged listing in id order, label counts, originals from Get."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from numpy.typing import NDArray

from lookalike.app.compose import blobs_from, engine_from, pipeline_from, store_from
from lookalike.core.settings import ServerSettings
from lookalike.core.vector_store import MilvusVectorStore
from lookalike.embedder.runtime import Embedder
from lookalike.ingestion.demo import DEMO_IMAGES
from lookalike.ingestion.sources import folder_items
from lookalike.services.client import ClientError, LookalikeClient, UpsertItem
from lookalike.services.server import start_server
from tests.conftest import encode, gradient_image, make_settings

DEMO_COUNT = len(DEMO_IMAGES)


@dataclass(frozen=True)
class Demo:
    """A running server over the demo photos, a client of it, and the store it serves."""

    client: LookalikeClient
    store: MilvusVectorStore
    demo_dir: Path


@contextmanager
def demo_served(data_dir: Path, embedder: Embedder, demo_dir: Path) -> Iterator[Demo]:
    """The demo photos ingested into Milvus Lite under `data_dir`, served on 127.0.0.1:0."""
    settings = make_settings(data_dir)
    store = store_from(settings, embedder)
    blobs = blobs_from(settings)
    report = pipeline_from(settings, embedder, store, blobs).run(
        folder_items(demo_dir), progress=False
    )
    assert (report.added, report.failed) == (DEMO_COUNT, [])
    running = start_server(engine_from(settings, embedder, store, blobs),
                           ServerSettings(host="127.0.0.1", port=0))
    try:
        with LookalikeClient(running.address, timeout_s=60) as client:
            yield Demo(client, store, demo_dir)
    finally:
        running.stop(grace_s=1.0)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder,
         demo_dir: Path) -> Iterator[Demo]:
    """One server over the demo photos for this module."""
    with demo_served(tmp_path_factory.mktemp("browse-data"), embedder, demo_dir) as served:
        yield served


def test_labels_narrow_a_search_to_any_of_them(demo: Demo) -> None:
    """A search with labels returns only images carrying one of them, and all of those."""
    query = (demo.demo_dir / "animals/chelsea.png").read_bytes()
    hits = demo.client.search(image=query, top_k=24, labels=["space", "textures"]).hits
    assert Counter(h.label for h in hits) == {"space": 2, "textures": 3}


def test_labels_and_a_filter_are_combined(demo: Demo) -> None:
    """labels are ANDed with the filter expression."""
    query = (demo.demo_dir / "animals/chelsea.png").read_bytes()
    hits = demo.client.search(image=query, top_k=24, labels=["objects", "people"],
                              filter_expr='source like "%motorcycle%"').hits
    assert sorted(h.source.rsplit("/", 1)[-1] for h in hits) == [
        "motorcycle_left.png", "motorcycle_right.png"]


def test_tags_narrow_search_and_list_to_images_with_all_of_them(demo: Demo) -> None:
    """tags keep only images carrying every one of them, in Search, BatchSearch and List."""
    items = [UpsertItem(image=encode(gradient_image(seed=s)), tags=tags, label="tagged")
             for s, tags in ((1, ("red", "big")), (2, ("red",)), (3, ("big",)))]
    stored = [r.image.id for r in demo.client.upsert(items) if r.image is not None]
    assert len(stored) == 3
    try:
        hits = demo.client.search(image_id=stored[1], top_k=10, tags=["red", "big"]).hits
        assert [h.id for h in hits] == [stored[0]]
        assert {h.id for h in demo.client.search(vector=_vector(demo, stored[0]), top_k=10,
                                                 tags=["big"]).hits} == {stored[0], stored[2]}
        page = demo.client.list_images(tags=["red"], include_thumbnails=False)
        assert (sorted(h.id for h in page.images), page.total) == (sorted(stored[:2]), 2)
    finally:
        demo.client.delete(ids=stored)


def _vector(demo: Demo, image_id: int) -> NDArray[np.float32]:
    stored = demo.store.get_vectors([image_id])[0]
    assert stored is not None
    return stored


def test_list_pages_cover_every_id_once_in_id_order(demo: Demo) -> None:
    """Pages of 5 cover every stored id exactly once, ascending, with the total each time."""
    seen: list[int] = []
    for offset in range(0, DEMO_COUNT + 5, 5):
        page = demo.client.list_images(offset=offset, limit=5, include_thumbnails=False)
        assert page.total == DEMO_COUNT
        assert len(page.images) == max(0, min(5, DEMO_COUNT - offset))
        seen += [h.id for h in page.images]
    assert seen == sorted(seen)
    assert seen == sorted(i for batch in demo.store.iter_ids() for i in batch)


def test_list_with_labels_and_thumbnails(demo: Demo) -> None:
    """A filtered page holds only matching images, with thumbnails, and the filtered total."""
    page = demo.client.list_images(labels=["microscopy"], limit=2, include_thumbnails=True)
    assert page.total == 4
    assert len(page.images) == 2
    assert all(h.label == "microscopy" and h.thumbnail.startswith(b"\xff\xd8")
               for h in page.images)


def test_list_default_limit_and_limits(demo: Demo) -> None:
    """limit 0 means 50; past 1000, or offset + limit past 16384, is INVALID_ARGUMENT."""
    assert len(demo.client.list_images(limit=0, include_thumbnails=False).images) == DEMO_COUNT
    with pytest.raises(ClientError) as too_deep:
        demo.client.list_images(offset=16384, limit=1)
    assert too_deep.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "filter" in too_deep.value.message
    with pytest.raises(ClientError) as too_many:
        demo.client.list_images(limit=1001)
    assert too_many.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_list_with_a_bad_filter_is_invalid_argument(demo: Demo) -> None:
    """A filter Milvus refuses is INVALID_ARGUMENT, not an internal error."""
    with pytest.raises(ClientError) as info:
        demo.client.list_images(filter_expr="no_such_field == 1")
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_count_labels_equals_the_demo_labels(demo: Demo) -> None:
    """CountLabels gives the demo's images per label, and honours a filter."""
    assert demo.client.count_labels() == dict(Counter(DEMO_IMAGES.values()))
    assert demo.client.count_labels('label in ["space", "people"]') == {"space": 2, "people": 2}
    assert demo.client.count_labels('label == "nothing"') == {}


def test_get_with_originals_returns_the_stored_bytes(demo: Demo) -> None:
    """include_originals fills each hit with the original file's exact bytes; else empty."""
    original = (demo.demo_dir / "space/moon.png").read_bytes()
    image_id = demo.client.search(image=original, top_k=1).hits[0].id
    with_original = demo.client.get([image_id], include_originals=True).images[0]
    assert with_original.image == original
    assert demo.client.get([image_id]).images[0].image == b""
