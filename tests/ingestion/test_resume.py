"""Resume: `lookalike ingest` SIGKILLed at a random point, then run again, stores each image once
and leaves no temp file of the killed run behind."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from lookalike.app.compose import blobs_from, store_from
from lookalike.core.ids import content_id
from lookalike.core.settings import Settings
from lookalike.embedder.runtime import Embedder
from lookalike.maintenance.upkeep import all_ids
from tests.conftest import encode, gradient_image, make_settings

IMAGES = 40


def _ingest_command(root: Path) -> list[str]:
    return [sys.executable, "-m", "lookalike.cli", "ingest", str(root), "--no-progress"]


def _env(data_dir: Path) -> dict[str, str]:
    return os.environ | {
        "LOOKALIKE_DATA_DIR": str(data_dir),
        "LOOKALIKE_MODEL__BACKBONE": "efficientnet_lite0",
        "LOOKALIKE_MODEL__THREADS": "2",
        "LOOKALIKE_MODEL__BATCH_SIZE": "4",
        "LOOKALIKE_INGEST__QUEUE_BATCHES": "1",
    }


# `lookalike ingest` whose blob writes stop for good between the temp file and its move.
STALLED_INGEST = """
import sys, time
from lookalike.cli import main
from lookalike.core import blob_store
place = blob_store._place
blob_store._place = lambda path, data, move: place(path, data, lambda src, dst: time.sleep(600))
main(sys.argv[1:])
"""


def _stored_blob_count(data_dir: Path) -> int:
    images = data_dir / "blobs" / "images"
    return sum(1 for p in images.iterdir() if not p.name.startswith(".")) if images.is_dir() else 0


def test_sigkill_at_a_random_point_then_rerun_stores_every_image_once(
    tmp_path: Path, embedder: Embedder
) -> None:
    """After a SIGKILL mid-run and a rerun: count = unique images, no duplicate ids, blobs present,
    no temp files left."""
    root = tmp_path / "photos"
    (root / "a").mkdir(parents=True)
    for seed in range(IMAGES):
        (root / "a" / f"{seed:03d}.jpg").write_bytes(encode(gradient_image(48, 32, seed=seed)))
    (root / "a" / "copy.jpg").write_bytes((root / "a" / "007.jpg").read_bytes())
    data_dir = tmp_path / "data"
    seed = random.randrange(1 << 30)
    chance = random.Random(seed)
    trigger = chance.randint(1, IMAGES - 12)  # originals stored before the kill ...
    jitter_s = chance.uniform(0.0, 0.2)  # ... and then a little later, in whatever stage
    process = subprocess.Popen(
        _ingest_command(root), env=_env(data_dir), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while _stored_blob_count(data_dir) < trigger and process.poll() is None:
            assert time.monotonic() < deadline, "ingest made no progress"
            time.sleep(0.01)
        time.sleep(jitter_s)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stdout is not None
        process.stdout.close()
    assert process.returncode == -signal.SIGKILL, f"run ended before the kill (seed {seed})"
    # Blobs (and model files) are written to `.tmp-*` files and moved into place.
    left_by_kill = list((data_dir / "blobs").rglob(".tmp-*"))

    again = subprocess.run(
        _ingest_command(root), env=_env(data_dir), capture_output=True, text=True, timeout=180,
        check=False,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert list((data_dir / "blobs").rglob(".tmp-*")) == [], f"seed {seed}"
    if left_by_kill:
        assert f"removed {len(left_by_kill)} leftover" in again.stdout, f"seed {seed}"

    settings: Settings = make_settings(data_dir)
    store = store_from(settings, embedder)
    blobs = blobs_from(settings)
    ids = list(all_ids(store))
    expected = {content_id((root / "a" / f"{s:03d}.jpg").read_bytes())[0] for s in range(IMAGES)}
    when = f"seed {seed}: killed {jitter_s:.2f} s after {trigger} originals"
    assert store.count() == IMAGES, when
    assert sorted(ids) == sorted(expected), when
    for meta in store.get(ids):
        assert meta is not None
        assert blobs.exists(meta.blob_key)
        assert blobs.exists(meta.thumb_key)


def test_the_temp_files_of_an_ingest_killed_mid_write_are_removed_by_the_next(tmp_path: Path) -> None:
    """An ingest SIGKILLed while writing blobs leaves temp files; the next ingest removes them."""
    root = tmp_path / "photos"
    root.mkdir()
    for seed in range(4):
        (root / f"{seed}.jpg").write_bytes(encode(gradient_image(48, 32, seed=seed)))
    data_dir = tmp_path / "data"
    log = tmp_path / "stalled.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", STALLED_INGEST, "ingest", str(root), "--no-progress"],
            env=_env(data_dir), stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while not list((data_dir / "blobs").rglob(".tmp-*")):
            assert process.poll() is None, f"the stalled ingest exited: {log.read_text()}"
            assert time.monotonic() < deadline, "the stalled ingest wrote no blob"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    left = list((data_dir / "blobs").rglob(".tmp-*"))
    assert left
    assert all(f"-{process.pid}-" in p.name for p in left)

    again = subprocess.run(
        _ingest_command(root), env=_env(data_dir), capture_output=True, text=True, timeout=180,
        check=False,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"removed {len(left)} leftover" in again.stdout
    assert list((data_dir / "blobs").rglob(".tmp-*")) == []
    assert _stored_blob_count(data_dir) == 4
