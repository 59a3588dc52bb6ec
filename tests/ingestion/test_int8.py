"""int8 through the command line: `lookalike quantize` calibrates on a folder or on the
collection's stored originals, and `lookalike reindex` moves the collection to the int8 model
(another embedding) through the alias swap; searches then run int8."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from lookalike import cli
from lookalike.app.compose import embedder_from, store_from
from lookalike.core.ids import content_id
from lookalike.core.settings import Settings
from tests.conftest import encode

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry",
          "hubble_deep_field", "cat", "retina")


def _crops(folder: Path, count: int) -> list[Path]:
    """`count` JPEG crops of the photographs scikit-image ships, under `folder`."""
    rng = np.random.default_rng(0)
    photos = [Image.fromarray(getattr(data, name)()) for name in PHOTOS]
    folder.mkdir(parents=True)
    paths = []
    for i in range(count):
        photo = photos[i % len(photos)]
        w, h = photo.size
        cw, ch = int(w * rng.uniform(0.4, 0.9)), int(h * rng.uniform(0.4, 0.9))
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        path = folder / f"{i:03d}.jpg"
        path.write_bytes(encode(photo.crop((left, top, left + cw, top + ch)), quality=90))
        paths.append(path)
    return paths


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The CLI's settings rooted in `tmp_path`; the data dir."""
    monkeypatch.setenv("LOOKALIKE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LOOKALIKE_MODEL__THREADS", "2")
    return tmp_path / "data"


def test_quantize_a_folder_then_reindex_the_collection_to_int8(
    cli_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Calibrated on a folder, checked against fp32; the re-index builds the int8 collection
    from the stored originals and swaps it in, and an int8 search finds each image first."""
    photos = _crops(tmp_path / "photos", 90)
    assert cli.main(["ingest", str(photos[0].parent), "--no-progress"]) == cli.EXIT_OK
    capsys.readouterr()
    assert cli.main(["quantize", str(photos[0].parent), "--count", "90"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "calibrated on 40 images" in out
    graph = next((cli_env / "models").glob("efficientnet_lite0-int8-*.onnx"))
    assert f"LOOKALIKE_MODEL__INT8_MODEL={graph}" in out
    median = float(out.split("cosine median ")[1].split(",")[0])
    assert median >= 0.98

    monkeypatch.setenv("LOOKALIKE_MODEL__PRECISION", "int8")
    monkeypatch.setenv("LOOKALIKE_MODEL__INT8_MODEL", str(graph))
    assert cli.main(["reindex", "--model", "efficientnet_lite0"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "90 images re-indexed into images__" in out
    assert f"LOOKALIKE_MODEL__INT8_MODEL={graph}" in out

    settings = Settings()
    embedder = embedder_from(settings)
    store = store_from(settings, embedder)
    assert store.stored_spec()["quantization"] == embedder.spec.quantization
    assert store.count() == 90
    for path in photos[:5]:
        query = embedder.embed_bytes([path.read_bytes()])[0].vector
        assert query is not None
        (hit, *_), = store.search(query[None, :], 3)
        assert hit.image.id == content_id(path.read_bytes())[0]


def test_quantize_the_collection_originals(
    cli_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a folder, the calibration reads the collection's stored originals; too few
    images are refused with the reason."""
    photos = _crops(tmp_path / "photos", 90)
    assert cli.main(["ingest", str(photos[0].parent), "--no-progress"]) == cli.EXIT_OK
    capsys.readouterr()
    assert cli.main(["quantize", "--count", "90"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "on up to 90 images of the stored originals of 'images'" in out
    assert "calibrated on 40 images" in out
    assert cli.main(["quantize", "--count", "60"]) == cli.EXIT_ERROR
    assert "60 usable images: int8 needs at least 80" in capsys.readouterr().err
