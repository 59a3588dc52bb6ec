"""The real UI in headless Chromium: `streamlit run` against a real gRPC server."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bench.ui_screenshot import CHROMEDRIVER, CHROMIUM, headless_chromium, tour, wait_until_serving
from lookalike.embedder.runtime import Embedder
from tests.conftest import encode, free_port, gradient_image, stop_process
from tests.ui.conftest import QUERY_LABEL, QUERY_NAME, demo_server

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


def _ingest_folder(root: Path) -> Path:
    """Three new photos and one file that is not an image, in a `<label>/` folder."""
    folder = root / "new" / "gradients"
    folder.mkdir(parents=True)
    for seed in range(3):
        (folder / f"gradient_{seed}.jpg").write_bytes(encode(gradient_image(seed=seed)))
    (folder / "notes.jpg").write_text("not an image")
    return root / "new"


def test_tour_in_chromium_searches_finds_more_like_this_and_shows_every_page(
    tmp_path: Path, embedder: Embedder, demo_dir: Path
) -> None:
    """Uploading a stored photo shows it first; "More like this" on result #2 searches by that
    stored image (which its own results leave out); Browse, Ingest (a job with one bad file),
    Evaluate (a job on the demo photos) and Admin render; a screenshot of each is saved."""
    out_dir = Path(os.environ.get("LOOKALIKE_SCREENSHOTS") or tmp_path / "screenshots")
    ingest = _ingest_folder(tmp_path / "incoming")
    with (
        demo_server(tmp_path / "data", embedder, demo_dir,
                    job_roots=[tmp_path / "incoming", demo_dir]) as address,
        streamlit_ui(address, tmp_path / "streamlit.log") as url,
    ):
        driver = headless_chromium(tmp_path / "chromium-profile")
        try:
            seen = tour(driver, url, demo_dir / QUERY_LABEL / QUERY_NAME, out_dir,
                        ingest=str(ingest), evaluate=str(demo_dir))
        finally:
            driver.quit()
    assert (seen.first.rank, seen.first.label, seen.first.name) == (1, QUERY_LABEL, QUERY_NAME)
    assert seen.first.score > 0.99
    assert "Stored image #" in seen.similar_query
    assert seen.clicked.name in seen.similar_query
    # The stored image searched for is left out of its own results: #1 is another photo.
    assert seen.similar_first.name != seen.clicked.name
    assert [p.name for p in seen.screenshots] == [
        "search.png", "more_like_this.png", "browse.png", "ingest.png", "evaluate.png",
        "train.png", "admin.png"]
    assert all(p.stat().st_size > 20_000 for p in seen.screenshots)
    assert "3 added, 0 already stored, 0 duplicates, 1 failed" in seen.texts["ingest"]
    assert "baseline" in seen.texts["evaluate"]
    assert "Page 1 of 2 · 24 images" in seen.texts["browse"]
