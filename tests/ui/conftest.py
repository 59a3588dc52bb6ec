"""What the UI tests share: a real gRPC server over the demo photos, and the app under AppTest."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from streamlit.testing.v1 import AppTest

from lookalike.app.compose import blobs_from, engine_from, pipeline_from, store_from
from lookalike.app.jobs import job_runners_from
from lookalike.core.settings import ServerSettings
from lookalike.embedder.runtime import Embedder
from lookalike.ingestion.sources import folder_items
from lookalike.services.model_switch import ModelSwitch
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
    switch = ModelSwitch()
    running = start_server(
        # As `lookalike serve`: the server follows its collection to a rolled-out model.
        engine_from(settings, embedder, store, blobs, follower=switch),
        ServerSettings(host="127.0.0.1", port=port, tokens=tokens,
                       job_roots=[str(root) for root in job_roots]),
        jobs=job_runners_from(settings, embedder, store, blobs, switch),
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


def table(at: AppTest, first_column: str) -> Any:
    """The one table on the page whose first column is `first_column` (read-only tables carry
    no key in AppTest)."""
    found = [d.value for d in at.dataframe if list(d.value.columns)[:1] == [first_column]]
    assert len(found) == 1, [list(d.value.columns) for d in at.dataframe]
    return found[0]


def run_until_finished(at: AppTest, timeout_s: float = 180.0) -> AppTest:
    """Rerun the page, as the live views' polling does, until no job it follows still runs."""
    deadline = time.monotonic() + timeout_s
    while not at.status or any(s.state == "running" for s in at.status):
        assert time.monotonic() < deadline, f"job still running after {timeout_s} s"
        assert not at.exception, at.exception
        time.sleep(0.3)
        at.run()
    return at


@pytest.fixture(scope="module")
def job_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one folder the module's job server may run jobs on."""
    return tmp_path_factory.mktemp("job-root")


@pytest.fixture(scope="module")
def job_server_address(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
    embedder: Embedder, demo_dir: Path, job_root: Path,
) -> Iterator[str]:
    """One demo server, allowed to run jobs under `job_root`, for every test in a module."""
    name = request.module.__name__.rsplit(".", 1)[-1]
    with demo_server(tmp_path_factory.mktemp(name), embedder, demo_dir,
                     job_roots=[job_root]) as address:
        yield address
