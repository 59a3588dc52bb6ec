"""One ingest as `lookalike ingest` and the server's jobs run it: it ends by sealing the
collection (flush, then wait for the index), on real Milvus Lite.

Milvus Lite's describe_index reports every row indexed even before a flush, so these tests
watch the seal call itself; docs/BENCHMARKS.md measures its effect on search latency."""

from __future__ import annotations

from pathlib import Path

from lookalike.app.compose import blobs_from, pipeline_from, store_from
from lookalike.app.ingest import ingest_items
from lookalike.core.settings import Settings
from lookalike.core.vector_store import MilvusVectorStore
from lookalike.embedder.runtime import Embedder
from lookalike.ingestion.sources import folder_items
from tests.conftest import encode, gradient_image


class _SealWatcher:
    """The real store, with each seal call's arguments and result recorded."""

    def __init__(self, inner: MilvusVectorStore) -> None:
        self._inner = inner
        self.seals: list[tuple[float, bool, bool]] = []

    def seal(self, timeout_s: float = 600.0, *, strict: bool = True) -> bool:
        indexed = self._inner.seal(timeout_s, strict=strict)
        self.seals.append((timeout_s, strict, indexed))
        return indexed

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


def _photos(tmp_path: Path, seeds: range) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir(exist_ok=True)
    for seed in seeds:
        (folder / f"{seed}.jpg").write_bytes(encode(gradient_image(seed=seed)))
    return folder


def _ingest(settings: Settings, embedder: Embedder, folder: Path,
            index_wait_s: float) -> tuple[_SealWatcher, bool, int]:
    store = _SealWatcher(store_from(settings, embedder))
    outcome = ingest_items(
        pipeline_from(settings, embedder, store, blobs_from(settings)),  # type: ignore[arg-type]
        store, folder_items(folder), total=None, dba=None,  # type: ignore[arg-type]
        index_wait_s=index_wait_s, progress=False,
    )
    return store, outcome.indexed, outcome.report.added


def test_an_ingest_that_adds_images_ends_sealed(
    settings: Settings, embedder: Embedder, tmp_path: Path
) -> None:
    """One seal, bounded by the setting and never raising; a rerun that adds nothing skips it."""
    folder = _photos(tmp_path, range(6))
    store, indexed, added = _ingest(settings, embedder, folder, 30.0)
    assert (added, indexed) == (6, True)
    assert store.seals == [(30.0, False, True)]
    again, indexed, added = _ingest(settings, embedder, folder, 30.0)
    assert (added, indexed, again.seals) == (0, True, [])


def test_no_wait_leaves_the_index_to_the_background(
    settings: Settings, embedder: Embedder, tmp_path: Path
) -> None:
    """`index_wait_s=0` does not seal and says the index may not cover the new rows yet."""
    store, indexed, added = _ingest(settings, embedder, _photos(tmp_path, range(2)), 0.0)
    assert (added, indexed, store.seals) == (2, False, [])
