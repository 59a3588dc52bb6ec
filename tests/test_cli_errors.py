"""The CLI's errors as a user sees them: one clean `error:` line, no library's traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import encode, gradient_image


def _lookalike(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LOOKALIKE_DATA_DIR": str(data_dir),
           "LOOKALIKE_MODEL__BACKBONE": "efficientnet_lite0", "LOOKALIKE_MODEL__THREADS": "2"}
    return subprocess.run([sys.executable, "-m", "lookalike.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_bad_filter_prints_only_the_error_line(tmp_path: Path) -> None:
    """`lookalike delete --filter 'bad((('` exits 1 with stderr holding only the `error:`
    message naming the filter (Milvus's caret lines included), no pymilvus traceback."""
    images = tmp_path / "images"
    images.mkdir()
    (images / "one.jpg").write_bytes(encode(gradient_image()))
    ingested = _lookalike("ingest", str(images), "--no-progress", data_dir=tmp_path / "data")
    assert ingested.returncode == 0, ingested.stderr
    done = _lookalike("delete", "--filter", "bad(((", data_dir=tmp_path / "data")
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    assert done.stderr.startswith("error: filter 'bad(((' was refused: "), done.stderr
    for noise in ("Traceback", "[ERROR]", "RPC error", "MilvusException", "decorators.py"):
        assert noise not in done.stderr, done.stderr
