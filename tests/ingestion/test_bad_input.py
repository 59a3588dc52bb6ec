"""Bad and unusual input through `lookalike ingest`: every file ingests or is reported."""

from __future__ import annotations

import io
import json
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike import cli
from lookalike.compose import blobs_from, embedder_from, store_from
from lookalike.core.ids import content_id
from lookalike.core.settings import Settings
from tests.conftest import encode, gradient_image


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def decompression_bomb(width: int, height: int) -> bytes:
    """A valid grayscale PNG of width x height zeros: a few kB that decode to width*height bytes."""
    row = b"\x00" * (width + 1)
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", body)
            + _png_chunk(b"IEND", b""))


def write_corpus(root: Path) -> dict[str, tuple[int, int]]:
    """The bad-input corpus; returns the good files' expected stored (width, height)."""
    root.mkdir(parents=True)
    jpeg = encode(gradient_image(seed=1))
    (root / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "zero.jpg").write_bytes(b"")
    (root / "text.jpg").write_bytes(b"just some notes, not an image\n")
    (root / "bomb.png").write_bytes(decompression_bomb(8000, 8000))
    deep = (np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 21).astype(np.uint16)
    (root / "sixteen_bit.png").write_bytes(encode(Image.fromarray(deep), "PNG"))
    (root / "cmyk.jpg").write_bytes(encode(gradient_image(seed=2).convert("CMYK")))
    palette = gradient_image(seed=3).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    (root / "palette.png").write_bytes(encode(palette, "PNG", transparency=0))
    frames = [gradient_image(80, 40, seed=s) for s in (4, 5, 6)]
    (root / "animated.gif").write_bytes(
        encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    )
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    (root / "rotated.jpg").write_bytes(encode(gradient_image(96, 64, seed=7), exif=exif))
    (root / "photo.webp").write_bytes(encode(gradient_image(seed=8), "WEBP"))
    (root / "wide.jpg").write_bytes(encode(gradient_image(10_000, 300, seed=9), quality=70))
    return {"sixteen_bit.png": (64, 48), "cmyk.jpg": (96, 64), "palette.png": (96, 64),
            "animated.gif": (80, 40), "rotated.jpg": (64, 96), "photo.webp": (96, 64),
            "wide.jpg": (10_000, 300)}


def test_bad_input_corpus_gives_exactly_the_expected_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Broken files land in the JSONL report with their reasons (exit 3); the rest are stored right."""
    data_dir = tmp_path / "data"
    monkeypatch.setenv("LOOKALIKE_DATA_DIR", str(data_dir))
    monkeypatch.setenv("LOOKALIKE_MODEL__BACKBONE", "efficientnet_lite0")
    monkeypatch.setenv("LOOKALIKE_MODEL__THREADS", "2")
    root = tmp_path / "corpus"
    good = write_corpus(root)
    report = tmp_path / "failed.jsonl"
    code = cli.main(["ingest", str(root), "--report", str(report), "--no-progress"])
    assert code == cli.EXIT_SOME_FILES_FAILED
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    expected = {  # file -> full-match pattern of its reason (libjpeg decides the byte count)
        "bomb.png": re.escape("8000x8000 = 64,000,000 pixels is over the limit of 50,000,000"),
        "text.jpg": re.escape("not a recognised image format"),
        "truncated.jpg": r"corrupt or truncated JPEG image: image file is truncated "
                         r"\(\d+ bytes not processed\)",
        "zero.jpg": re.escape("empty file (0 bytes)"),
    }
    assert sorted(Path(r["path"]).name for r in lines) == sorted(expected)
    for r in lines:
        assert re.fullmatch(expected[Path(r["path"]).name], r["reason"]), r
    assert all(Path(r["path"]).parent == root for r in lines)

    settings = Settings()
    embedder = embedder_from(settings)
    store = store_from(settings, embedder)
    blobs = blobs_from(settings)
    assert store.count() == len(good)
    for name, (width, height) in good.items():
        data = (root / name).read_bytes()
        meta = store.get([content_id(data)[0]])[0]
        assert meta is not None, name
        assert (meta.width, meta.height) == (width, height), name
        assert blobs.get(meta.blob_key) == data, name
        with Image.open(io.BytesIO(blobs.get(meta.thumb_key))) as thumb:
            assert max(thumb.size) <= settings.ingest.thumbnail_px, name
    # The GIF's stored vector is its first frame's, not a later one's.
    gif = (root / "animated.gif").read_bytes()
    with Image.open(io.BytesIO(gif)) as animation:
        frames = []
        for index in (0, 1):
            animation.seek(index)
            frames.append(animation.convert("RGB"))
    first, second = embedder.embed_images(frames)
    stored = store.get_vectors([content_id(gif)[0]])[0]
    assert stored is not None
    assert float(first @ stored) > 0.999 > float(second @ stored)
