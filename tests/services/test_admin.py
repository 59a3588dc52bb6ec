"""AdminService against a real gRPC server over the demo photos in Milvus Lite: listing the
collections, rebuilding the served index, and dropping collections behind their guard."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from lookalike.embedder.runtime import Embedder
from lookalike.services.client import ClientError, UpsertItem
from tests.services.test_browse import DEMO_COUNT, Demo, demo_served


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder,
         demo_dir: Path) -> Iterator[Demo]:
    """One server over the demo photos for the tests that leave its collection in place."""
    with demo_served(tmp_path_factory.mktemp("admin-data"), embedder, demo_dir) as served:
        yield served


def _query(demo: Demo) -> bytes:
    return (demo.demo_dir / "animals/horse.png").read_bytes()


def _exact_top1(demo: Demo) -> int:
    return demo.client.search(image=_query(demo), top_k=1).hits[0].id


def test_list_collections_shows_the_served_collection(demo: Demo) -> None:
    """The served physical collection is listed with its alias, count, model and index."""
    collections = demo.client.list_collections()
    served = [c for c in collections if c.serving]
    assert len(served) == 1
    summary = served[0]
    assert summary.name == demo.store.live_collection()
    assert summary.aliases == ("images",)
    assert summary.count == DEMO_COUNT
    assert summary.model is not None
    assert summary.model.dim == demo.client.stats().model.dim
    assert (summary.index_type, summary.index_params["M"]) == ("HNSW", "16")
    assert not any(c.name.endswith(("__codes", "__routes")) for c in collections)


def test_rebuild_index_flat_hnsw_flat_keeps_answering(demo: Demo) -> None:
    """FLAT, then HNSW with M=8, then the settings' index: each reported as built, and
    searches after each find the query photo first."""
    expected = _exact_top1(demo)
    flat = demo.client.rebuild_index("FLAT")
    assert (flat.index_type, flat.index_params) == ("FLAT", {})
    assert flat.seconds > 0
    assert _exact_top1(demo) == expected
    assert demo.client.stats().index_type == "FLAT"
    hnsw = demo.client.rebuild_index("hnsw", {"M": "8"})
    assert hnsw.index_type == "HNSW"
    assert hnsw.index_params == {"M": "8", "efConstruction": "200"}
    assert _exact_top1(demo) == expected
    listed = next(c for c in demo.client.list_collections() if c.serving)
    assert (listed.index_type, listed.index_params["M"]) == ("HNSW", "8")
    back = demo.client.rebuild_index()
    assert (back.index_type, back.index_params["M"]) == ("HNSW", "16")
    assert _exact_top1(demo) == expected


def test_rebuild_index_refusals(demo: Demo) -> None:
    """IVF_PQ on Milvus Lite, an unknown type and bad parameters are refused; the index stays."""
    with pytest.raises(ClientError) as pq:
        demo.client.rebuild_index("IVF_PQ")
    assert pq.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "Milvus Lite cannot build IVF_PQ" in pq.value.message
    with pytest.raises(ClientError) as unknown:
        demo.client.rebuild_index("ANNOY")
    assert unknown.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "known: HNSW, FLAT, IVF_FLAT, IVF_SQ8, IVF_PQ" in unknown.value.message
    for params in ({"nlist": "8"}, {"M": "many"}, {"M": "1000"}):
        with pytest.raises(ClientError) as bad:
            demo.client.rebuild_index("HNSW", params)
        assert bad.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert demo.client.stats().index_type == "HNSW"
    assert demo.client.search(image=_query(demo), top_k=3).hits


def test_drop_collection_guard_and_unknown_name(demo: Demo) -> None:
    """A drop without the name repeated is INVALID_ARGUMENT; an unknown name or a companion
    is NOT_FOUND; nothing is dropped."""
    served = demo.store.live_collection()
    with pytest.raises(ClientError) as unconfirmed:
        demo.client.drop_collection(served, confirm="yes")
    assert unconfirmed.value.code == grpc.StatusCode.INVALID_ARGUMENT
    for name in ("no_such_collection", f"{served}__codes"):
        with pytest.raises(ClientError) as missing:
            demo.client.drop_collection(name, confirm=name)
        assert missing.value.code == grpc.StatusCode.NOT_FOUND
    assert demo.client.stats().count == DEMO_COUNT


def test_drop_another_version_leaves_the_served_one(demo: Demo) -> None:
    """Dropping a collection that is not served removes it and changes nothing served."""
    spec = demo.store.stored_spec()
    other = demo.store.create_version(spec | {"version": int(spec.get("version", 0)) + 100},
                                      int(spec["dim"]))
    assert other.name in {c.name for c in demo.client.list_collections()}
    dropped = demo.client.drop_collection(other.name, confirm=other.name)
    assert (dropped.dropped_images, dropped.recreated) == (0, False)
    assert other.name not in {c.name for c in demo.client.list_collections()}
    assert demo.client.stats().count == DEMO_COUNT


def test_drop_the_served_collection_recreates_it_empty(
    tmp_path: Path, embedder: Embedder, demo_dir: Path
) -> None:
    """Dropping the served collection reports its images and leaves an empty one of the same
    model under the same alias: searches answer with no hits, blobs stay, upserts work."""
    with demo_served(tmp_path / "data", embedder, demo_dir) as demo:
        served = demo.store.live_collection()
        model = demo.client.stats().model
        dropped = demo.client.drop_collection(served, confirm=served)
        assert (dropped.dropped_images, dropped.recreated) == (DEMO_COUNT, True)
        stats = demo.client.stats()
        assert (stats.collection, stats.count, stats.model) == ("images", 0, model)
        assert demo.client.search(image=_query(demo), top_k=5).hits == []
        assert demo.client.list_images().total == 0
        assert any((tmp_path / "data" / "blobs").rglob("*.png"))
        assert demo.client.upsert([UpsertItem(image=_query(demo), label="animals")])[0].created
        assert demo.client.search(image=_query(demo), top_k=5).hits[0].score > 0.99
        assert [c.serving for c in demo.client.list_collections()] == [True]
