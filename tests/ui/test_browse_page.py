"""The Browse page in Streamlit's AppTest against a real gRPC server over the demo photos."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lookalike.app.compose import blobs_from, engine_from, store_from
from lookalike.core.settings import ServerSettings
from lookalike.embedder.runtime import Embedder
from lookalike.ingestion.demo import DEMO_IMAGES
from lookalike.services.server import start_server
from tests.conftest import make_settings
from tests.ui.conftest import DEMO_COUNT, QUERY_LABEL, QUERY_NAME, demo_server, open_app

PAGE = "browse.py"


@pytest.fixture(scope="module")
def server_address(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder, demo_dir: Path
) -> Iterator[str]:
    """One demo server for every test in this module."""
    with demo_server(tmp_path_factory.mktemp("ui-browse"), embedder, demo_dir) as address:
        yield address


@contextmanager
def empty_server(data_dir: Path, embedder: Embedder) -> Iterator[str]:
    """A real gRPC server on 127.0.0.1 over a collection with no images; yields host:port."""
    settings = make_settings(data_dir)
    store = store_from(settings, embedder)
    running = start_server(
        engine_from(settings, embedder, store, blobs_from(settings)),
        ServerSettings(host="127.0.0.1", port=0),
    )
    try:
        yield running.address
    finally:
        running.stop(grace_s=1.0)


def gallery_ids(at: AppTest) -> list[int]:
    """Ids of the gallery's cards (their "Open" buttons), in page order."""
    return [int(b.key[len("open_"):]) for b in at.button
            if b.key and b.key.startswith("open_") and b.key[len("open_"):].isdigit()]


def neighbour_ids(at: AppTest) -> list[int]:
    """Ids of the detail view's neighbour cards, in page order."""
    return [int(b.key[len("neighbour_"):]) for b in at.button
            if b.key and b.key.startswith("neighbour_") and b.key[len("neighbour_"):].isdigit()]


def nav_text(at: AppTest) -> str:
    """The "Page i of n · total images" line."""
    return next(m.value for m in at.markdown if m.value.startswith("Page **"))


def detail_fields(at: AppTest) -> dict[str, str]:
    """Field -> value of the detail view's metadata table."""
    table = at.table[0].value
    return dict(zip(table["Field"], table["Value"], strict=True))


def test_counts_per_label_are_shown(monkeypatch: pytest.MonkeyPatch, server_address: str) -> None:
    """The page shows the collection's size and how many images each label holds."""
    at = open_app(monkeypatch, server_address, page=PAGE)
    assert not at.exception
    assert not at.error
    assert at.title[0].value == "Browse"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Images"] == str(DEMO_COUNT)
    expected_labels = set(DEMO_IMAGES.values())
    assert metrics["Labels"] == str(len(expected_labels))
    table = at.dataframe[0].value
    counts = dict(zip(table["Label"], table["Images"], strict=True))
    assert counts == {label: list(DEMO_IMAGES.values()).count(label) for label in expected_labels}


def test_pagination_shows_other_images_on_the_next_page(
    monkeypatch: pytest.MonkeyPatch, server_address: str
) -> None:
    """Pages hold page-size images each, Next shows different ones, Previous goes back."""
    at = open_app(monkeypatch, server_address, page=PAGE)
    assert nav_text(at) == f"Page **1** of **2** · {DEMO_COUNT} images"
    assert at.button(key="browse_prev").disabled
    first = gallery_ids(at)
    assert len(first) == 12
    at.button(key="browse_next").click().run()
    assert not at.exception
    assert nav_text(at) == f"Page **2** of **2** · {DEMO_COUNT} images"
    assert at.button(key="browse_next").disabled
    second = gallery_ids(at)
    assert len(second) == 12
    assert not set(first) & set(second)
    at.button(key="browse_prev").click().run()
    assert gallery_ids(at) == first
    at.selectbox(key="browse_page_size").set_value(48).run()
    assert nav_text(at) == f"Page **1** of **1** · {DEMO_COUNT} images"
    assert len(gallery_ids(at)) == DEMO_COUNT


def test_label_filter_narrows_the_gallery(
    monkeypatch: pytest.MonkeyPatch, server_address: str
) -> None:
    """Choosing labels shows only their images and starts again from page 1."""
    at = open_app(monkeypatch, server_address, page=PAGE)
    at.button(key="browse_next").click().run()
    at.multiselect(key="browse_labels").set_value(["microscopy", "space"]).run()
    assert not at.exception
    assert not at.error
    assert nav_text(at) == "Page **1** of **1** · 6 images"
    assert len(gallery_ids(at)) == 6
    captions = [c.value for c in at.caption if " · " in c.value]
    assert {c.split(" · ")[0] for c in captions} == {"microscopy", "space"}


def test_open_shows_metadata_and_neighbours(
    monkeypatch: pytest.MonkeyPatch, server_address: str
) -> None:
    """"Open" shows the image's metadata and its nearest neighbours, each of which opens in turn."""
    at = open_app(monkeypatch, server_address, page=PAGE)
    at.multiselect(key="browse_labels").set_value([QUERY_LABEL]).run()
    card_keys = [str(b.key) for b in at.main.container
                 if str(b.key).startswith("open_card_")
                 and b.caption[0].value == f"{QUERY_LABEL} · {QUERY_NAME}"]
    chosen = int(card_keys[0][len("open_card_"):])
    at.button(key=f"open_{chosen}").click().run()
    assert not at.exception
    assert not at.error
    fields = detail_fields(at)
    assert fields["Id"] == str(chosen)
    assert fields["Label"] == QUERY_LABEL
    assert fields["Source"].endswith(QUERY_NAME)
    assert fields["Size"] == "451 × 300 px"
    assert fields["Ingested"].endswith(" UTC")
    assert len(fields["SHA-256"]) == 64
    assert any(e.label == "Metadata (JSON)" for e in at.expander)
    neighbours = neighbour_ids(at)
    assert len(neighbours) == 6
    assert chosen not in neighbours
    at.button(key=f"neighbour_{neighbours[0]}").click().run()
    assert detail_fields(at)["Id"] == str(neighbours[0])
    at.button(key="browse_close").click().run()
    assert not at.table


def test_find_similar_opens_search_with_the_stored_image(
    monkeypatch: pytest.MonkeyPatch, server_address: str
) -> None:
    """"Find similar in Search" switches to Search with the open image as the query."""
    at = open_app(monkeypatch, server_address, page=PAGE)
    chosen = gallery_ids(at)[0]
    at.button(key=f"open_{chosen}").click().run()
    at.button(key="browse_search_similar").click().run()
    assert not at.exception
    assert not at.error
    assert at.title[0].value == "Search"
    assert at.segmented_control(key="search_source").value == "stored"
    card = next(b for b in at.main.container if b.key == "stored_query")
    assert card.markdown[0].value == f"**Stored image #{chosen}**"
    assert any(b.key == "hit_1" for b in at.main.container)


def test_empty_collection_points_to_ingest(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, embedder: Embedder
) -> None:
    """With nothing stored the page says so and links to the Ingest page, with no error."""
    with empty_server(tmp_path / "data", embedder) as address:
        at = open_app(monkeypatch, address, page=PAGE)
        assert not at.exception
        assert not at.error
        assert "The collection is empty" in at.info[0].value
        assert "Ingest" in at.info[0].value
        assert at.get("page_link")
        assert not gallery_ids(at)
