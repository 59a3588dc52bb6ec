"""The Admin page in Streamlit's AppTest against a real gRPC server over the demo photos."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lookalike.embedder.runtime import Embedder
from tests.ui.conftest import DEMO_COUNT, demo_server, open_app, table

PAGE = "admin.py"
# The demo photos of one label (brick, grass, gravel).
TEXTURES = 3


@pytest.fixture(scope="module")
def server_address(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder, demo_dir: Path
) -> Iterator[str]:
    """One demo server for the tests in this module that do not delete anything."""
    with demo_server(tmp_path_factory.mktemp("ui-admin"), embedder, demo_dir) as address:
        yield address


@pytest.fixture
def own_server(tmp_path: Path, embedder: Embedder, demo_dir: Path) -> Iterator[str]:
    """A demo server for one test that deletes or drops."""
    with demo_server(tmp_path / "data", embedder, demo_dir) as address:
        yield address


def metric(at: AppTest, label: str) -> str:
    """The value of the metric labelled `label`."""
    values = [m.value for m in at.metric if m.label == label]
    assert len(values) == 1, [m.label for m in at.metric]
    return values[0]


def button_keys(at: AppTest) -> list[str | None]:
    """The keys of the buttons on the page."""
    return [b.key for b in at.button]


def test_page_shows_stats_model_collections_and_health(
    monkeypatch: pytest.MonkeyPatch, server_address: str
) -> None:
    """The page shows the image count, the model spec, the collections and every service healthy."""
    at = open_app(monkeypatch, server_address, PAGE)
    assert not at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.title[0].value == "Admin"
    assert metric(at, "Images") == str(DEMO_COUNT)
    assert metric(at, "Dimensions").isdigit()
    model = at.table[0].value
    assert "Backbone" in list(model["Property"])
    assert "efficientnet_lite0" in list(model["Value"])
    collections = table(at, "Name")
    served = collections[collections["Serving"]]
    assert len(served) == 1
    assert int(served["Images"].iloc[0]) == DEMO_COUNT
    badges = [m.value for m in at.get_by_key("admin_health").markdown]
    assert any("Server" in b for b in badges)
    assert any("SearchService" in b for b in badges)
    assert all(":green-badge[" in b for b in badges), badges
    profiles = table(at, "Profile")
    assert list(profiles["Profile"]) == ["fast", "balanced", "quality", "instance"]
    assert (profiles["Ingest images/s"] > 0).all()
    assert (profiles["Query ms"] > 0).all()


def test_rebuild_to_hnsw_asks_first_then_reports(
    monkeypatch: pytest.MonkeyPatch, server_address: str
) -> None:
    """Rebuild index asks for confirmation (warning searches fail), then builds HNSW and says so."""
    at = open_app(monkeypatch, server_address, PAGE)
    at.selectbox(key="admin_index_type").set_value("HNSW")
    at.button(key="admin_rebuild").click().run()
    assert not at.exception
    confirmation = at.get_by_key("admin_rebuild_confirmation")
    assert "Searches fail while it builds" in confirmation.warning[0].value
    at.button(key="admin_rebuild_confirm").click().run(timeout=120)
    assert not at.exception
    assert not at.error, [e.value for e in at.error]
    assert any(s.value.startswith("Rebuilt the index as HNSW") for s in at.success)
    assert metric(at, "Index") == "HNSW"
    assert "admin_rebuild_confirm" not in button_keys(at)


def test_delete_by_filter_confirms_and_removes_the_images(
    monkeypatch: pytest.MonkeyPatch, own_server: str
) -> None:
    """Deleting by a label filter shows how many go, waits for the confirmation, then removes them."""
    at = open_app(monkeypatch, own_server, PAGE)
    at.segmented_control(key="admin_delete_by").set_value("filter").run()
    at.text_input(key="admin_delete_filter").set_value('label == "textures"')
    at.button(key="admin_delete_review").click().run()
    assert not at.exception
    assert not at.error, [e.value for e in at.error]
    warning = at.get_by_key("admin_delete_confirmation").warning[0].value
    assert f"**{TEXTURES}** stored images" in warning
    assert metric(at, "Images") == str(DEMO_COUNT)
    at.button(key="admin_delete_confirm").click().run()
    assert not at.exception
    assert [s.value for s in at.success] == [f"Deleted {TEXTURES} images."]
    assert metric(at, "Images") == str(DEMO_COUNT - TEXTURES)


def test_cancelled_delete_removes_nothing(
    monkeypatch: pytest.MonkeyPatch, server_address: str
) -> None:
    """Cancel on the delete confirmation leaves the collection as it was."""
    at = open_app(monkeypatch, server_address, PAGE)
    at.segmented_control(key="admin_delete_by").set_value("filter").run()
    at.text_input(key="admin_delete_filter").set_value('label == "textures"')
    at.button(key="admin_delete_review").click().run()
    at.button(key="admin_delete_cancel").click().run()
    assert not at.exception
    assert "admin_delete_confirm" not in button_keys(at)
    assert metric(at, "Images") == str(DEMO_COUNT)


def test_bad_filter_shows_the_servers_message(
    monkeypatch: pytest.MonkeyPatch, server_address: str
) -> None:
    """A filter the server cannot parse is reported as its refusal, and nothing is asked to confirm."""
    at = open_app(monkeypatch, server_address, PAGE)
    at.segmented_control(key="admin_delete_by").set_value("filter").run()
    at.text_input(key="admin_delete_filter").set_value("label ==")
    at.button(key="admin_delete_review").click().run()
    assert not at.exception
    assert len(at.error) == 1
    assert at.error[0].value.startswith("The server refused this deletion review")
    assert metric(at, "Images") == str(DEMO_COUNT)


def test_delete_by_unknown_ids_has_nothing_to_delete(
    monkeypatch: pytest.MonkeyPatch, server_address: str
) -> None:
    """Ids that are not stored are named, and no confirmation is offered."""
    at = open_app(monkeypatch, server_address, PAGE)
    at.text_input(key="admin_delete_ids").set_value("1, 2")
    at.button(key="admin_delete_review").click().run()
    assert not at.exception
    assert any("nothing to delete" in i.value for i in at.info)
    assert any(c.value == "Not stored, so left alone: 1, 2" for c in at.caption)


def test_drop_needs_the_typed_name_then_recreates_an_empty_collection(
    monkeypatch: pytest.MonkeyPatch, own_server: str
) -> None:
    """Drop collection stays disabled until the name is typed; then the served one comes back empty."""
    at = open_app(monkeypatch, own_server, PAGE)
    name = at.selectbox(key="admin_drop_name").value
    assert name
    drop = at.button(key="admin_drop")
    assert drop.disabled
    assert any("cannot be undone" in w.value for w in at.warning)
    at.text_input(key="admin_drop_confirm").set_value(name[:-1]).run()
    assert at.button(key="admin_drop").disabled
    at.text_input(key="admin_drop_confirm").set_value(name).run()
    assert not at.button(key="admin_drop").disabled
    at.button(key="admin_drop").click().run(timeout=120)
    assert not at.exception
    assert not at.error, [e.value for e in at.error]
    assert [s.value for s in at.success] == [
        f"Dropped {name} ({DEMO_COUNT} images). An empty collection with the same model took "
        "its place."
    ]
    assert metric(at, "Images") == "0"
    assert at.text_input(key="admin_drop_confirm").value == ""
    assert at.button(key="admin_drop").disabled

