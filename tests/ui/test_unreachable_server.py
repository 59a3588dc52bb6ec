"""Every page that talks to the server, with none listening: a clear error and a retry button,
never a traceback."""

from __future__ import annotations

import pytest

from tests.ui.conftest import closed_port_address, open_app


@pytest.mark.parametrize(("page", "retry_key"), [
    ("ingest.py", "ingest_retry"),
    ("evaluate.py", "eval_retry"),
    ("train.py", "train_retry"),
    ("admin.py", "admin_retry"),
])
def test_unreachable_server_shows_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, page: str, retry_key: str,
) -> None:
    """With no server listening the page says it cannot reach it, offers to retry, and never fails."""
    address = closed_port_address()
    at = open_app(monkeypatch, address, page)
    assert not at.exception
    assert len(at.error) == 1
    assert at.error[0].value.startswith(f"Cannot reach the Lookalike server at {address}")
    assert at.button(key=retry_key).label == "Try again"
