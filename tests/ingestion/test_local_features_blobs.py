"""Local features at ingest: stored beside each new image before its vector, removed on delete."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import cast

import pytest

from lookalike.app.compose import blobs_from, pipeline_from, store_from
from lookalike.core.blob_store import BlobStore
from lookalike.core.schemas import ImageMeta, features_key
from lookalike.core.settings import RetrievalSettings, Settings
from lookalike.core.vector_store import MilvusVectorStore
from lookalike.embedder.local_features import LocalFeatures
from lookalike.embedder.runtime import Embedder
from lookalike.ingestion.sources import folder_items
from lookalike.maintenance.upkeep import all_ids, delete_images
from tests.conftest import make_settings

PHOTOS = ("animals/chelsea.png", "objects/coffee.png", "documents/text.png")


class _WriteOrder:
    """The real blob store, noting for each features blob whether its vector was stored already."""

    def __init__(self, inner: BlobStore) -> None:
        self.inner = inner
        self.store: MilvusVectorStore | None = None
        self.vector_before_features: dict[str, bool] = {}
        self.content_types: dict[str, str] = {}
        self.lock = threading.Lock()

    def put(self, key: str, data: bytes, content_type: str) -> None:
        if key.startswith("features/") and self.store is not None:
            sha = key.removeprefix("features/").removesuffix(".npz")
            stored = bool(self.store.ids_matching(f'sha256 == "{sha}"'))
            with self.lock:
                self.vector_before_features[sha] = stored
        with self.lock:
            self.content_types[key] = content_type
        self.inner.put(key, data, content_type)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def _photos(demo_dir: Path, root: Path) -> Path:
    for name in PHOTOS:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(demo_dir / name, root / name)
    return root


def _verifying(data_dir: Path) -> Settings:
    return make_settings(data_dir).model_copy(update={"retrieval": RetrievalSettings(verify=True)})


def _stored(store: MilvusVectorStore) -> list[ImageMeta]:
    return [m for m in store.get(list(all_ids(store))) if m is not None]


def test_features_are_stored_before_the_vector(
    tmp_path: Path, demo_dir: Path, embedder: Embedder
) -> None:
    """With verification on, every new image gets a readable SIFT features blob, written (as
    application/octet-stream) while its vector is not stored yet."""
    settings = _verifying(tmp_path / "data")
    store = store_from(settings, embedder)
    blobs = _WriteOrder(blobs_from(settings))
    blobs.store = store
    report = pipeline_from(settings, embedder, store, cast(BlobStore, blobs)).run(
        folder_items(_photos(demo_dir, tmp_path / "photos")), progress=False
    )
    assert report.added == len(PHOTOS)
    metas = _stored(store)
    assert sorted(blobs.vector_before_features) == sorted(m.sha256 for m in metas)
    assert not any(blobs.vector_before_features.values())
    for meta in metas:
        assert meta.features_key == features_key(meta.sha256) == f"features/{meta.sha256}.npz"
        assert blobs.content_types[meta.features_key] == "application/octet-stream"
        features = LocalFeatures.from_bytes(blobs.inner.get(meta.features_key))
        assert features.kind == "sift"
        assert len(features) > 50


def test_no_features_without_verification(
    tmp_path: Path, demo_dir: Path, embedder: Embedder
) -> None:
    """With verification off (the default), ingest stores originals and thumbnails only."""
    settings = make_settings(tmp_path / "data")
    store = store_from(settings, embedder)
    blobs = blobs_from(settings)
    pipeline_from(settings, embedder, store, blobs).run(
        folder_items(_photos(demo_dir, tmp_path / "photos")), progress=False
    )
    metas = _stored(store)
    assert len(metas) == len(PHOTOS)
    assert not any(blobs.exists(m.features_key) for m in metas)
    assert all(blobs.exists(m.thumb_key) for m in metas)


def test_already_stored_images_extract_nothing(
    tmp_path: Path, demo_dir: Path, embedder: Embedder
) -> None:
    """A rerun skips stored ids before decoding: a removed features blob is not written again."""
    settings = _verifying(tmp_path / "data")
    store = store_from(settings, embedder)
    blobs = blobs_from(settings)
    root = _photos(demo_dir, tmp_path / "photos")
    pipeline = pipeline_from(settings, embedder, store, blobs)
    pipeline.run(folder_items(root), progress=False)
    gone = _stored(store)[0]
    blobs.delete(gone.features_key)
    report = pipeline.run(folder_items(root), progress=False)
    assert (report.added, report.already_stored) == (0, len(PHOTOS))
    assert not blobs.exists(gone.features_key)


@pytest.mark.parametrize("verify", [True, False])
def test_delete_removes_the_features_blob(
    tmp_path: Path, demo_dir: Path, embedder: Embedder, verify: bool
) -> None:
    """Delete removes vector, original, thumbnail and features; an image stored without
    features deletes just as well."""
    settings = _verifying(tmp_path / "data") if verify else make_settings(tmp_path / "data")
    store = store_from(settings, embedder)
    blobs = blobs_from(settings)
    pipeline_from(settings, embedder, store, blobs).run(
        folder_items(_photos(demo_dir, tmp_path / "photos")), progress=False
    )
    victim, *kept = _stored(store)
    assert blobs.exists(victim.features_key) is verify
    assert delete_images(store, blobs, [victim.id]) == 1
    assert store.get([victim.id]) == [None]
    assert not any(blobs.exists(k) for k in (victim.blob_key, victim.thumb_key,
                                             victim.features_key))
    assert all(blobs.exists(m.features_key) is verify for m in kept)
