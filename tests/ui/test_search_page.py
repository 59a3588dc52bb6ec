"""The Search page in Streamlit's AppTest against a real gRPC server over the demo photos."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydantic import SecretStr
from streamlit.testing.v1 import AppTest

from lookalike.compose import blobs_from, engine_from, pipeline_from, store_from
from lookalike.core.settings import ServerSettings
from lookalike.embedder.runtime import Embedder
from lookalike.ingestion.sources import folder_items
from lookalike.services.server import start_server
from tests.conftest import free_port, make_settings

APP = Path(__file__).resolve().parents[2] / "lookalike" / "ui" / "streamlit_app.py"
# A demo photo with no Markdown-special characters in its name, so captions show it verbatim.
QUERY_LABEL, QUERY_NAME = "animals", "chelsea.png"
DEMO_COUNT = 24


@contextmanager
def demo_server(
    data_dir: Path, embedder: Embedder, demo_dir: Path, port: int = 0, token: str = ""
) -> Iterator[str]:
    """A real gRPC server on 127.0.0.1 over the ingested demo photos; yields host:port."""
    settings = make_settings(data_dir)
    store = store_from(settings, embedder)
    blobs = blobs_from(settings)
    report = pipeline_from(settings, embedder, store, blobs).run(
        folder_items(demo_dir), progress=False
    )
    assert (report.added, report.failed) == (DEMO_COUNT, [])
    tokens = [SecretStr(token)] if token else []
    running = start_server(
        engine_from(settings, embedder, store, blobs),
        ServerSettings(host="127.0.0.1", port=port, tokens=tokens),
    )
    try:
        yield running.address
    finally:
        running.stop(grace_s=1.0)


def closed_port_address() -> str:
    """host:port of a port nothing listens on (bound, then released)."""
    return f"127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def server_address(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder, demo_dir: Path
) -> Iterator[str]:
    """One demo server for every test in this module."""
    with demo_server(tmp_path_factory.mktemp("ui-data"), embedder, demo_dir) as address:
        yield address


def open_app(monkeypatch: pytest.MonkeyPatch, address: str) -> AppTest:
    """The app, run once, talking to the server at `address`."""
    monkeypatch.setenv("LOOKALIKE_CLIENT__ADDRESS", address)
    return AppTest.from_file(str(APP), default_timeout=30).run()


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
    assert at.title[0].value == "Lookalike"
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
    assert re.fullmatch(r"Found in \d+ ms on the server · collection \S+", summaries[0])


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
