"""What the UI tests share: a real gRPC server over the demo photos, and the app under AppTest."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydantic import SecretStr
from streamlit.testing.v1 import AppTest

from lookalike.compose import blobs_from, engine_from, pipeline_from, store_from
from lookalike.core.settings import ServerSettings
from lookalike.embedder.runtime import Embedder
from lookalike.ingestion.sources import folder_items
from lookalike.server_jobs import job_runners_from
from lookalike.services.server import start_server
from tests.conftest import free_port, make_settings

APP = Path(__file__).resolve().parents[2] / "lookalike" / "ui" / "streamlit_app.py"
# A demo photo with no Markdown-special characters in its name, so captions show it verbatim.
QUERY_LABEL, QUERY_NAME = "animals", "chelsea.png"
DEMO_COUNT = 24


@contextmanager
def demo_server(
    data_dir: Path, embedder: Embedder, demo_dir: Path, port: int = 0, token: str = "",
    job_roots: Sequence[str | Path] = (),
) -> Iterator[str]:
    """A real gRPC server on 127.0.0.1 over the ingested demo photos, running jobs on sources
    under `job_roots`; yields host:port."""
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
        ServerSettings(host="127.0.0.1", port=port, tokens=tokens,
                       job_roots=[str(root) for root in job_roots]),
        jobs=job_runners_from(settings, embedder, store, blobs),
    )
    try:
        yield running.address
    finally:
        running.stop(grace_s=1.0)


def closed_port_address() -> str:
    """host:port of a port nothing listens on (bound, then released)."""
    return f"127.0.0.1:{free_port()}"


def open_app(monkeypatch: pytest.MonkeyPatch, address: str, page: str = "") -> AppTest:
    """The app, run once on `page` (a file under app_pages/; "" the default), talking to the
    server at `address`."""
    monkeypatch.setenv("LOOKALIKE_CLIENT__ADDRESS", address)
    at = AppTest.from_file(str(APP), default_timeout=30)
    if page:
        at.switch_page(f"app_pages/{page}")
    return at.run()
