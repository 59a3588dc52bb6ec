"""The Search page in Streamlit's AppTest against a real gRPC server over the demo photos."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from lookalike.embedder.runtime import Embedder
from lookalike.services.client import LookalikeClient
from tests.ui.conftest import QUERY_LABEL, QUERY_NAME, closed_port_address, demo_server, open_app


@pytest.fixture(scope="module")
def server_address(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder, demo_dir: Path
) -> Iterator[str]:
    """One demo server for every test in this module."""
    with demo_server(tmp_path_factory.mktemp("ui-data"), embedder, demo_dir) as address:
        yield address


def upload(at: AppTest, path: Path) -> AppTest:
    """Drop `path` onto the page's file uploader, as a person would, and rerun."""
    at.file_uploader(key="query_image").set_value((path.name, path.read_bytes(), "image/png"))
    return at.run()


def result_cards(at: AppTest) -> list[tuple[int, float, str]]:
    """(rank, score, caption) of each result card on the page, in page order."""
    cards = []
    for block in at.main.container:
        if block.key is None or not block.key.startswith("hit_"):
            continue
        match = re.fullmatch(r"\*\*#(\d+)\*\* · score (\d+\.\d{3})", block.markdown[0].value)
        assert match is not None, block.markdown[0].value
        cards.append((int(match[1]), float(match[2]), block.caption[0].value))
    return cards


def test_page_invites_an_upload_before_searching(
    monkeypatch: pytest.MonkeyPatch, server_address: str
) -> None:
    """Before any upload the page shows its title, the uploader and a hint, and nothing fails."""
    at = open_app(monkeypatch, server_address)
    assert not at.exception
    assert not at.error
    assert at.title[0].value == "Search"
    assert len(at.file_uploader) == 1
    assert at.file_uploader[0].allowed_type == [".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp"]
    assert at.slider(key="top_k").value == 12
    assert "Upload an image" in at.info[0].value


def test_uploaded_photo_comes_back_first(
    monkeypatch: pytest.MonkeyPatch, server_address: str, demo_dir: Path
) -> None:
    """Uploading a stored demo photo through the widget shows it first (score > 0.99) in 12 cards."""
    at = upload(open_app(monkeypatch, server_address), demo_dir / QUERY_LABEL / QUERY_NAME)
    assert not at.exception
    assert not at.error
    cards = result_cards(at)
    assert [rank for rank, _, _ in cards] == list(range(1, 13))
    _, score, caption = cards[0]
    assert score > 0.99
    assert caption == f"{QUERY_LABEL} · {QUERY_NAME}"
    assert [s for _, s, _ in cards] == sorted((s for _, s, _ in cards), reverse=True)
    assert at.subheader[0].value == "12 similar images"
    summaries = [c.value for c in at.caption if c.value.startswith("Found in")]
    assert len(summaries) == 1
    assert re.fullmatch(
        r"Found in \d+ ms on the server \(\d+ ms round trip\) · collection \S+", summaries[0]
    )


def test_top_k_and_filter_reach_the_server(
    monkeypatch: pytest.MonkeyPatch, server_address: str, demo_dir: Path
) -> None:
    """The slider sets how many results come back and the filter limits them to one label."""
    at = upload(open_app(monkeypatch, server_address), demo_dir / QUERY_LABEL / QUERY_NAME)
    at.slider(key="top_k").set_value(3)
    at.text_input(key="filter_expr").input('label == "space"')
    at.run()
    assert not at.exception
    assert not at.error
    cards = result_cards(at)
    assert len(cards) == 2  # the demo set holds two "space" photos
    assert all(caption.startswith("space · ") for _, _, caption in cards)


def test_bad_filter_shows_the_servers_message(
    monkeypatch: pytest.MonkeyPatch, server_address: str, demo_dir: Path
) -> None:
    """A filter the server refuses becomes an st.error quoting the server, not a traceback."""
    at = upload(open_app(monkeypatch, server_address), demo_dir / QUERY_LABEL / QUERY_NAME)
    at.text_input(key="filter_expr").input("label ==== oops").run()
    assert not at.exception
    assert len(at.error) == 1
    assert at.error[0].value.startswith("The server refused this search: ")
    assert "label ==== oops" in at.error[0].value


def test_unreachable_server_shows_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, demo_dir: Path
) -> None:
    """With nothing listening at the address, the page says it cannot reach the server there."""
    address = closed_port_address()
    at = upload(open_app(monkeypatch, address), demo_dir / QUERY_LABEL / QUERY_NAME)
    assert not at.exception
    assert len(at.error) == 1
    assert at.error[0].value.startswith(f"Cannot reach the Lookalike server at {address}.")
    assert result_cards(at) == []


def test_try_again_recovers_once_the_server_is_up(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, embedder: Embedder, demo_dir: Path
) -> None:
    """A failed search is not remembered: "Try again" after the server starts shows results."""
    address = closed_port_address()
    at = upload(open_app(monkeypatch, address), demo_dir / QUERY_LABEL / QUERY_NAME)
    assert at.error[0].value.startswith("Cannot reach")
    port = int(address.rsplit(":", 1)[1])
    with demo_server(tmp_path / "data", embedder, demo_dir, port=port):
        at.button(key="retry_search").click().run()
        assert not at.exception
        assert not at.error
        assert result_cards(at)[0][2] == f"{QUERY_LABEL} · {QUERY_NAME}"


def test_a_token_protected_server_needs_the_configured_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, embedder: Embedder, demo_dir: Path
) -> None:
    """With LOOKALIKE_CLIENT__TOKEN the page searches; without it, it says the token is refused."""
    with demo_server(tmp_path / "data", embedder, demo_dir, token="ui-secret") as address:
        at = upload(open_app(monkeypatch, address), demo_dir / QUERY_LABEL / QUERY_NAME)
        assert not at.exception
        assert len(at.error) == 1
        assert "refused this client's credentials" in at.error[0].value
        assert "LOOKALIKE_CLIENT__TOKEN" in at.error[0].value
        monkeypatch.setenv("LOOKALIKE_CLIENT__TOKEN", "ui-secret")
        at = upload(open_app(monkeypatch, address), demo_dir / QUERY_LABEL / QUERY_NAME)
        assert not at.exception
        assert not at.error
        assert result_cards(at)[0][2] == f"{QUERY_LABEL} · {QUERY_NAME}"


def stored_id(address: str, path: Path) -> int:
    """The id the server stores the photo at `path` under (its best match, found by a real client)."""
    with LookalikeClient(address) as client:
        return client.search(image=path.read_bytes(), top_k=1).hits[0].id


def stored_query_text(at: AppTest) -> list[str]:
    """The markdown of the query panel's stored-image card (empty when there is none)."""
    return [m.value for block in at.main.container if block.key == "stored_query"
            for m in block.markdown]


def jpeg(path: Path) -> bytes:
    """The image at `path` re-encoded as JPEG, as a camera would send it."""
    out = io.BytesIO()
    with Image.open(path) as image:
        image.convert("RGB").save(out, format="JPEG", quality=92)
    return out.getvalue()


def test_camera_photo_is_searched(
    monkeypatch: pytest.MonkeyPatch, server_address: str, demo_dir: Path
) -> None:
    """Choosing Camera and taking a photo (a JPEG of a stored photo) finds that photo first."""
    at = open_app(monkeypatch, server_address)
    at.segmented_control(key="search_source").set_value("camera").run()
    assert len(at.file_uploader) == 0
    assert "Take a photo" in at.info[0].value
    shot = jpeg(demo_dir / QUERY_LABEL / QUERY_NAME)
    at.camera_input(key="query_camera").set_value(("shot.jpg", shot, "image/jpeg")).run()
    assert not at.exception
    assert not at.error
    _, score, caption = result_cards(at)[0]
    assert caption == f"{QUERY_LABEL} · {QUERY_NAME}"
    assert score > 0.9


def test_more_like_this_searches_by_the_stored_image(
    monkeypatch: pytest.MonkeyPatch, server_address: str, demo_dir: Path
) -> None:
    """"More like this" on hit #1 makes it the query: the panel shows it, the results leave it out."""
    query = demo_dir / QUERY_LABEL / QUERY_NAME
    at = upload(open_app(monkeypatch, server_address), query)
    at.button(key="more_1").click().run()
    assert not at.exception
    assert not at.error
    assert at.segmented_control(key="search_source").value == "stored"
    assert stored_query_text(at) == [f"**Stored image #{stored_id(server_address, query)}**"]
    cards = result_cards(at)
    assert len(cards) == 12
    assert all(caption != f"{QUERY_LABEL} · {QUERY_NAME}" for _, _, caption in cards)
    assert cards[0][1] < 0.99


def test_stored_image_by_typed_id(
    monkeypatch: pytest.MonkeyPatch, server_address: str, demo_dir: Path
) -> None:
    """Typing a stored image's id searches with it; an id that is stored nowhere says so."""
    image_id = stored_id(server_address, demo_dir / QUERY_LABEL / QUERY_NAME)
    at = open_app(monkeypatch, server_address)
    at.segmented_control(key="search_source").set_value("stored").run()
    at.text_input(key="stored_id_input").input(str(image_id)).run()
    assert not at.exception
    assert not at.error
    assert stored_query_text(at) == [f"**Stored image #{image_id}**"]
    assert len(result_cards(at)) == 12
    at.button(key="stored_clear").click().run()
    at.text_input(key="stored_id_input").input("12345").run()
    assert not at.exception
    assert at.warning[0].value == "No stored image has id #12345."
    assert result_cards(at) == []


def test_stored_image_picked_from_the_gallery(
    monkeypatch: pytest.MonkeyPatch, server_address: str
) -> None:
    """The stored-image gallery pages through the collection and "Use" makes an image the query."""
    at = open_app(monkeypatch, server_address)
    at.segmented_control(key="search_source").set_value("stored").run()
    assert not at.exception
    assert not at.error
    first_page = [b.key for b in at.button if b.key and b.key.startswith("pick_") and
                  b.key[5:].isdigit()]
    assert len(first_page) == 6
    assert any(c.value == "Page 1 of 4" for c in at.caption)
    at.button(key="pick_next").click().run()
    second_page = [b.key for b in at.button if b.key and b.key.startswith("pick_") and
                   b.key[5:].isdigit()]
    assert len(second_page) == 6
    assert not set(first_page) & set(second_page)
    chosen = int(second_page[0][5:])
    at.button(key=second_page[0]).click().run()
    assert not at.error
    assert stored_query_text(at) == [f"**Stored image #{chosen}**"]
    assert len(result_cards(at)) == 12


def test_crop_changes_what_is_searched(
    monkeypatch: pytest.MonkeyPatch, server_address: str, demo_dir: Path
) -> None:
    """Cropping the query to a corner searches the crop: the best score drops below the whole's."""
    at = upload(open_app(monkeypatch, server_address), demo_dir / QUERY_LABEL / QUERY_NAME)
    whole = result_cards(at)
    at.slider(key="crop_x").set_value((0, 40))
    at.slider(key="crop_y").set_value((50, 100)).run()
    assert not at.exception
    assert not at.error
    assert any("Searching the framed region (40% × 50%" in c.value for c in at.caption)
    cropped = result_cards(at)
    assert cropped[0][1] < whole[0][1] - 0.01
    assert cropped != whole
    at.button(key="crop_reset").click().run()
    assert result_cards(at) == whole


def test_label_filter_limits_results_to_the_chosen_labels(
    monkeypatch: pytest.MonkeyPatch, server_address: str, demo_dir: Path
) -> None:
    """The labels multiselect lists the collection's labels and only those labels come back."""
    at = upload(open_app(monkeypatch, server_address), demo_dir / QUERY_LABEL / QUERY_NAME)
    labels = at.multiselect(key="labels")
    assert set(labels.options) >= {"animals (2)", "space (2)", "microscopy (4)"}
    labels.set_value(["space", "microscopy"]).run()
    assert not at.exception
    assert not at.error
    cards = result_cards(at)
    assert len(cards) == 6
    assert {caption.split(" · ")[0] for _, _, caption in cards} == {"space", "microscopy"}


def test_tags_filter_reaches_the_server(
    monkeypatch: pytest.MonkeyPatch, server_address: str, demo_dir: Path
) -> None:
    """A tag no demo photo carries leaves no results, and the page says so."""
    at = upload(open_app(monkeypatch, server_address), demo_dir / QUERY_LABEL / QUERY_NAME)
    at.text_input(key="tags").input("no-such-tag, other").run()
    assert not at.exception
    assert not at.error
    assert result_cards(at) == []
    assert at.subheader[0].value == "0 similar images"


def test_min_score_is_off_by_default_and_bounds_the_scores(
    monkeypatch: pytest.MonkeyPatch, server_address: str, demo_dir: Path
) -> None:
    """With the minimum score on, only hits above it come back; off, all top-K do."""
    at = upload(open_app(monkeypatch, server_address), demo_dir / QUERY_LABEL / QUERY_NAME)
    assert at.slider(key="min_score").disabled
    scores = [score for _, score, _ in result_cards(at)]
    threshold = round((scores[1] + scores[-1]) / 2, 2)
    at.toggle(key="use_min_score").set_value(True).run()
    at.slider(key="min_score").set_value(threshold).run()
    assert not at.exception
    assert not at.error
    bounded = [score for _, score, _ in result_cards(at)]
    assert 2 <= len(bounded) < len(scores)
    assert all(score > threshold for score in bounded)


def test_unsupported_search_mode_shows_the_servers_message(
    monkeypatch: pytest.MonkeyPatch, server_address: str, demo_dir: Path
) -> None:
    """Hash and routed modes on a collection without codes or partitions are refused in words."""
    at = upload(open_app(monkeypatch, server_address), demo_dir / QUERY_LABEL / QUERY_NAME)
    at.selectbox(key="mode").set_value("hash_rerank").run()
    assert not at.exception
    assert len(at.error) == 1
    assert at.error[0].value.startswith("The server refused this search: ")
    assert "hash codes" in at.error[0].value
    assert result_cards(at) == []
    at.selectbox(key="mode").set_value("routed").run()
    assert "category partitions" in at.error[0].value
    at.selectbox(key="mode").set_value("ann").run()
    assert not at.error
    assert result_cards(at)[0][2] == f"{QUERY_LABEL} · {QUERY_NAME}"
