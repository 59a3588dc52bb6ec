"""The real UI in headless Chromium: `streamlit run` against a real gRPC server."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bench.ui_screenshot import (
    CHROMEDRIVER,
    CHROMIUM,
    headless_chromium,
    search_and_screenshot,
    wait_until_serving,
)
from lookalike.embedder.runtime import Embedder
from tests.conftest import free_port, stop_process
from tests.ui.test_search_page import QUERY_LABEL, QUERY_NAME, demo_server

REPO = Path(__file__).resolve().parents[2]
APP = Path("lookalike") / "ui" / "streamlit_app.py"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
        reason=f"needs {CHROMIUM} and {CHROMEDRIVER} (`make browser` installs them)",
    ),
]


@contextmanager
def streamlit_ui(server_address: str, log_path: Path) -> Iterator[str]:
    """`streamlit run` of the app on a free port, talking to `server_address`; yields its URL."""
    port = free_port()
    command = [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.address", "127.0.0.1", "--server.port", str(port),
        "--server.headless", "true", "--browser.gatherUsageStats", "false",
    ]
    env = {**os.environ, "LOOKALIKE_CLIENT__ADDRESS": server_address}
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_serving(url, timeout_s=60.0)
            yield url
        finally:
            stop_process(process, timeout_s=10.0)


def test_upload_in_chromium_shows_the_photo_first(
    tmp_path: Path, embedder: Embedder, demo_dir: Path
) -> None:
    """Uploading a stored photo through the page's file input shows that photo as result #1."""
    screenshot = Path(os.environ.get("LOOKALIKE_SCREENSHOT") or tmp_path / "search.png")
    with (
        demo_server(tmp_path / "data", embedder, demo_dir) as address,
        streamlit_ui(address, tmp_path / "streamlit.log") as url,
    ):
        driver = headless_chromium(tmp_path / "chromium-profile")
        try:
            first = search_and_screenshot(driver, url, demo_dir / QUERY_LABEL / QUERY_NAME,
                                          screenshot)
        finally:
            driver.quit()
    assert (first.rank, first.label, first.name) == (1, QUERY_LABEL, QUERY_NAME)
    assert first.score > 0.99
    assert screenshot.stat().st_size > 10_000
