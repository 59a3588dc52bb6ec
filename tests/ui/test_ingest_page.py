"""The Ingest page in Streamlit's AppTest against a real gRPC server that runs ingest jobs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lookalike.services.client import BadFile
from lookalike.ui.jobs_view import bad_files_jsonl
from tests.conftest import encode, gradient_image
from tests.ui.conftest import open_app, run_until_finished, table

PAGE = "ingest.py"
# label -> seeds of the generated images in the folder the tests ingest.
NEW_IMAGES = {"red": (101, 102, 103), "blue": (104, 105)}
BROKEN = "blue/broken.jpg"
# Enough images that an ingest is still running when Cancel is pressed a moment after Start.
CANCELLED_FOLDER_SIZE = 300


def write_folder(root: Path) -> Path:
    """`root` filled with small labelled JPEGs (NEW_IMAGES) and one file that is not an image."""
    for label, seeds in NEW_IMAGES.items():
        (root / label).mkdir(parents=True)
        for seed in seeds:
            (root / label / f"{seed}.jpg").write_bytes(encode(gradient_image(seed=seed)))
    (root / BROKEN).write_bytes(b"not an image at all")
    return root


def metric(at: AppTest, label: str) -> str:
    """The value of the metric labelled `label`."""
    values = [m.value for m in at.metric if m.label == label]
    assert len(values) == 1, [m.label for m in at.metric]
    return values[0]


def start(at: AppTest, source: str) -> AppTest:
    """Type `source` into the form and press Start ingest."""
    at.text_input(key="ingest_source").set_value(source)
    return at.button(key="ingest_start").click().run()


def test_page_invites_a_source_before_any_job(
    monkeypatch: pytest.MonkeyPatch, job_server_address: str
) -> None:
    """Before any job the page shows its form, a hint where progress will show, and no error."""
    at = open_app(monkeypatch, job_server_address, PAGE)
    assert not at.exception
    assert not at.error
    assert at.title[0].value == "Ingest"
    assert at.button(key="ingest_start").label == "Start ingest"
    assert "labelled" in at.text_input(key="ingest_source").help
    assert any(i.value.startswith("Start an ingest above") for i in at.info)


def test_ingest_runs_to_success_with_counts_and_bad_file_report(
    monkeypatch: pytest.MonkeyPatch, job_server_address: str, job_root: Path
) -> None:
    """A folder with one broken file is ingested live to "succeeded": counts, bad-file table, JSONL."""
    folder = write_folder(job_root / "incoming")
    at = run_until_finished(start(open_app(monkeypatch, job_server_address, PAGE), str(folder)))
    assert not at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.status[0].label.endswith("· succeeded")
    assert at.status[0].state == "complete"
    added = sum(len(seeds) for seeds in NEW_IMAGES.values())
    assert metric(at, "Added") == str(added)
    assert metric(at, "Failed") == "1"
    assert metric(at, "Already stored") == "0"
    bad = table(at, "Path")
    assert list(bad.columns) == ["Path", "Reason"]
    assert len(bad) == 1
    assert bad["Path"].iloc[0].endswith("broken.jpg")
    assert bad["Reason"].iloc[0]
    download = at.download_button(key="ingest_bad_files_download")
    assert download.label == "Download report (JSONL)"
    jobs = table(at, "Kind")
    assert jobs["Source"].iloc[0] == str(folder)
    assert jobs["State"].iloc[0] == "succeeded"

    again = run_until_finished(start(at, str(folder)))
    assert metric(again, "Added") == "0"
    assert metric(again, "Already stored") == str(added)


def test_job_is_still_shown_after_navigating_away(
    monkeypatch: pytest.MonkeyPatch, job_server_address: str, job_root: Path
) -> None:
    """The job followed is remembered: leaving for Search and coming back shows it again."""
    folder = write_folder(job_root / "navigate")
    at = run_until_finished(start(open_app(monkeypatch, job_server_address, PAGE), str(folder)))
    label = at.status[0].label
    at.switch_page("app_pages/search.py").run()
    assert not at.status
    at.switch_page("app_pages/ingest.py").run()
    assert not at.exception
    assert [s.label for s in at.status] == [label]


def test_cancel_stops_a_running_ingest(
    monkeypatch: pytest.MonkeyPatch, job_server_address: str, job_root: Path
) -> None:
    """Cancel job on a running ingest says so, and the job ends "cancelled" before the last file."""
    folder = job_root / "large" / "many"
    folder.mkdir(parents=True)
    for seed in range(CANCELLED_FOLDER_SIZE):
        (folder / f"{seed}.jpg").write_bytes(encode(gradient_image(seed=1000 + seed)))
    at = start(open_app(monkeypatch, job_server_address, PAGE), str(folder.parent))
    assert at.status[0].state == "running"
    at.button(key="ingest_cancel").click().run()
    assert not at.exception
    assert any(s.value.startswith("Asked job") for s in at.success)
    at = run_until_finished(at)
    assert at.status[0].label.endswith("· cancelled")
    assert int(metric(at, "Added")) < CANCELLED_FOLDER_SIZE


def test_source_outside_the_job_roots_is_refused(
    monkeypatch: pytest.MonkeyPatch, job_server_address: str, demo_dir: Path
) -> None:
    """A source outside the server's job roots shows the server's refusal, and no job starts."""
    at = start(open_app(monkeypatch, job_server_address, PAGE), str(demo_dir))
    assert not at.exception
    assert len(at.error) == 1
    assert at.error[0].value.startswith("The server refused this ingest:")
    assert not at.status


def test_empty_source_asks_for_one(
    monkeypatch: pytest.MonkeyPatch, job_server_address: str
) -> None:
    """Start with no source asks for one instead of calling the server."""
    at = start(open_app(monkeypatch, job_server_address, PAGE), "  ")
    assert not at.exception
    assert not at.error
    assert [w.value for w in at.warning] == [
        "Enter a folder on the server or an s3://bucket/prefix to ingest."
    ]


def test_bad_file_report_is_jsonl() -> None:
    """The downloadable report has one JSON object (path, reason) per line."""
    failed = [BadFile("/x/a.jpg", "decode"), BadFile("/x/b.png", "too_large")]
    lines = bad_files_jsonl(failed).splitlines()
    assert [json.loads(line) for line in lines] == [
        {"path": "/x/a.jpg", "reason": "decode"}, {"path": "/x/b.png", "reason": "too_large"},
    ]

