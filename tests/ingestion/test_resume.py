"""Resume: `lookalike ingest` SIGKILLed at a random point, then run again, stores each image once."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from lookalike.compose import blobs_from, store_from
from lookalike.core.ids import content_id
from lookalike.core.settings import Settings
from lookalike.embedder.runtime import Embedder
from lookalike.ingestion.maintenance import all_ids
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


def _stored_blob_count(data_dir: Path) -> int:
    images = data_dir / "blobs" / "images"
    return sum(1 for p in images.iterdir() if not p.name.startswith(".")) if images.is_dir() else 0


def test_sigkill_at_a_random_point_then_rerun_stores_every_image_once(
    tmp_path: Path, embedder: Embedder
) -> None:
    """After a SIGKILL mid-run and a rerun: count = unique images, no duplicate ids, blobs present."""
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

    again = subprocess.run(
        _ingest_command(root), env=_env(data_dir), capture_output=True, text=True, timeout=180,
        check=False,
    )
    assert again.returncode == 0, again.stdout + again.stderr

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
