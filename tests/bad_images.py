"""The bad-input corpus: broken, unusual and oversized image files, and what each should give.

Shared by the `lookalike ingest` test and the gRPC API test, which run it under a configured
pixel limit other than the default so that every refusal must name that limit.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import encode, gradient_image

# Between the largest good file (wide.jpg, 3,000,000 pixels) and the smaller bomb (64,000,000),
# and not the default 50,000,000.
MAX_PIXELS = 20_000_000


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def decompression_bomb(width: int, height: int, bit_depth: int = 8) -> bytes:
    """A valid grayscale PNG of width x height zeros: kB that decode to width*height pixels."""
    row = b"\x00" * (1 + (width * bit_depth + 7) // 8)
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", body)
            + _png_chunk(b"IEND", b""))


@dataclass(frozen=True)
class Refusal:
    """Why a bad file is refused: the embedder's error kind ("decode" or "too_large") and a
    full-match pattern of the reason."""

    kind: str
    reason: str


@dataclass(frozen=True)
class Corpus:
    """The corpus's folder, its good files' stored (width, height), its bad files' refusals."""

    root: Path
    good: dict[str, tuple[int, int]]
    bad: dict[str, Refusal]


def _too_large(width: int, height: int, max_pixels: int) -> Refusal:
    return Refusal("too_large", re.escape(
        f"{width}x{height} = {width * height:,} pixels is over the limit of {max_pixels:,}"
    ))


def write_corpus(root: Path, max_pixels: int = MAX_PIXELS) -> Corpus:
    """Write the corpus under `root` (created) and say what each file should give under a pixel
    limit of `max_pixels`."""
    root.mkdir(parents=True)
    jpeg = encode(gradient_image(seed=1))
    (root / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "zero.jpg").write_bytes(b"")
    (root / "text.jpg").write_bytes(b"just some notes, not an image\n")
    (root / "bomb.png").write_bytes(decompression_bomb(8000, 8000))
    # Over Pillow's own limit (178,956,970 pixels), which Image.open enforces itself: 50 kB.
    (root / "pillow_bomb.png").write_bytes(decompression_bomb(20_000, 20_000, bit_depth=1))
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
    good = {"sixteen_bit.png": (64, 48), "cmyk.jpg": (96, 64), "palette.png": (96, 64),
            "animated.gif": (80, 40), "rotated.jpg": (64, 96), "photo.webp": (96, 64),
            "wide.jpg": (10_000, 300)}
    assert max(w * h for w, h in good.values()) <= max_pixels < 8000 * 8000
    bad = {
        "bomb.png": _too_large(8000, 8000, max_pixels),
        "pillow_bomb.png": _too_large(20_000, 20_000, max_pixels),
        "text.jpg": Refusal("decode", re.escape("not a recognised image format")),
        # libjpeg decides the byte count.
        "truncated.jpg": Refusal("decode", r"corrupt or truncated JPEG image: image file is "
                                           r"truncated \(\d+ bytes not processed\)"),
        "zero.jpg": Refusal("decode", re.escape("empty file (0 bytes)")),
    }
    return Corpus(root, good, bad)
