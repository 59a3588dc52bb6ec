"""`lookalike dedup` (range search per image) and `lookalike delete` (vector, then blobs)."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from lookalike import cli
from lookalike.app.compose import blobs_from, pipeline_from, store_from
from lookalike.core.ids import content_id
from lookalike.core.vector_store import MilvusVectorStore
from lookalike.embedder.runtime import Embedder
from lookalike.ingestion.sources import folder_items
from lookalike.maintenance.upkeep import all_ids
from tests.conftest import encode, make_settings


@pytest.fixture(scope="module")
def collection(
    tmp_path_factory: pytest.TempPathFactory, demo_dir: Path, embedder: Embedder
) -> Iterator[tuple[Path, MilvusVectorStore]]:
    """The demo photos plus two near-copies, ingested once; the CLI's environment points at them.

    The delete test comes last in this module, since it removes some.
    """
    tmp_path = tmp_path_factory.mktemp("maintenance")
    root = tmp_path / "photos"
    shutil.copytree(demo_dir, root)
    with Image.open(root / "people" / "astronaut.png") as astronaut:
        (root / "people" / "astronaut-q60.jpg").write_bytes(encode(astronaut.convert("RGB"),
                                                                  quality=60))
    with Image.open(root / "animals" / "chelsea.png") as chelsea:
        smaller = chelsea.convert("RGB").resize((chelsea.width // 2, chelsea.height // 2))
        (root / "animals" / "chelsea-small.png").write_bytes(encode(smaller, "PNG"))
    settings = make_settings(tmp_path / "data")
    store = store_from(settings, embedder)
    pipeline_from(settings, embedder, store, blobs_from(settings)).run(
        folder_items(root), progress=False
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LOOKALIKE_DATA_DIR", str(tmp_path / "data"))
        env.setenv("LOOKALIKE_MODEL__BACKBONE", "efficientnet_lite0")
        yield root, store


def test_dedup_lists_exactly_the_near_copies(
    collection: tuple[Path, MilvusVectorStore], capsys: pytest.CaptureFixture[str]
) -> None:
    """Re-encoded and resized copies pair with their originals; distinct photos do not pair."""
    assert cli.main(["dedup", "--threshold", "0.95", "--json"]) == cli.EXIT_OK
    pairs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    named = sorted(tuple(sorted(Path(p[k]).name for k in ("first_source", "second_source")))
                   for p in pairs)
    assert named == [("astronaut-q60.jpg", "astronaut.png"), ("chelsea-small.png", "chelsea.png")]
    assert all(0.95 < p["score"] <= 1.0 + 1e-3 and p["first"] < p["second"] for p in pairs)


def test_all_ids_pages_by_id_ranges(collection: tuple[Path, MilvusVectorStore]) -> None:
    """Every id is listed once even when one page holds only a few."""
    _, store = collection
    ids = list(all_ids(store, page=5))
    assert len(ids) == len(set(ids)) == store.count() == 26


def test_delete_by_id_then_by_filter_removes_vectors_then_blobs(
    collection: tuple[Path, MilvusVectorStore], capsys: pytest.CaptureFixture[str]
) -> None:
    """Deleted images leave no vector, original or thumbnail behind; others are untouched."""
    root, store = collection
    blobs = blobs_from(make_settings(root.parent / "data"))
    coins = content_id((root / "objects" / "coins.png").read_bytes())[0]
    meta = store.get([coins])[0]
    assert meta is not None
    assert blobs.exists(meta.blob_key)
    assert blobs.exists(meta.thumb_key)
    assert cli.main(["delete", "--id", str(coins), "12345"]) == cli.EXIT_OK
    assert "deleted 1 images" in capsys.readouterr().out
    assert store.get([coins]) == [None]
    assert not blobs.exists(meta.blob_key)
    assert not blobs.exists(meta.thumb_key)

    space = store.ids_matching('label == "space"')
    metas = [m for m in store.get(space) if m is not None]
    assert len(metas) == 2
    assert cli.main(["delete", "--filter", 'label == "space"']) == cli.EXIT_OK
    assert "deleted 2 images" in capsys.readouterr().out
    assert store.ids_matching('label == "space"') == []
    assert not any(blobs.exists(m.blob_key) or blobs.exists(m.thumb_key) for m in metas)
    assert store.count() == 26 - 3
    astronaut = store.get([content_id((root / "people" / "astronaut.png").read_bytes())[0]])[0]
    assert astronaut is not None
    with Image.open(io.BytesIO(blobs.get(astronaut.thumb_key))) as thumb:
        assert max(thumb.size) == 256
