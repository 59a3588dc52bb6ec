"""Decoding: orientation, colour modes, and clear errors for unusable inputs."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from lookalike.embedder.errors import ImageDecodeError, ImageTooLarge
from lookalike.embedder.transforms import decode, decode_image, resize, to_batch
from tests.conftest import encode, gradient_image

LIMIT = 50_000_000


def test_exif_orientation_is_applied() -> None:
    """A JPEG stored landscape with orientation 6 decodes as portrait."""
    image = gradient_image(120, 60)
    exif = Image.Exif()
    exif[0x0112] = 6
    decoded = decode_image(encode(image, "JPEG", exif=exif.tobytes()), LIMIT)
    assert decoded.size == (60, 120)


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("L", "PNG"), ("CMYK", "JPEG"), ("RGBA", "PNG"), ("P", "GIF"), ("I;16", "PNG"), ("LA", "PNG")],
)
def test_any_mode_becomes_rgb(mode: str, fmt: str) -> None:
    """Grey, CMYK, alpha, palette and 16-bit images all decode to 8-bit RGB."""
    image = gradient_image(40, 30).convert(mode) if mode != "I;16" else Image.fromarray(
        np.arange(1200, dtype=np.uint16).reshape(30, 40) * 50
    )
    decoded = decode_image(encode(image, fmt), LIMIT)
    assert decoded.mode == "RGB"
    assert decoded.size == (40, 30)


def test_sixteen_bit_values_are_scaled_not_clipped() -> None:
    """A bright 16-bit image stays bright rather than saturating or going black."""
    array = np.full((8, 8), 32768, dtype=np.uint16)
    decoded = decode_image(encode(Image.fromarray(array), "PNG"), LIMIT)
    assert 120 <= np.asarray(decoded)[0, 0, 0] <= 135


def test_transparency_is_flattened_onto_white() -> None:
    """A fully transparent pixel becomes white."""
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    decoded = decode_image(encode(rgba, "PNG"), LIMIT)
    assert decoded.getpixel((0, 0)) == (255, 255, 255)


def test_unusable_inputs_raise_clear_errors() -> None:
    """Empty, non-image and truncated inputs raise ImageDecodeError saying why."""
    with pytest.raises(ImageDecodeError, match="empty file"):
        decode_image(b"", LIMIT)
    with pytest.raises(ImageDecodeError, match="not a recognised image"):
        decode_image(b"hello, I am text", LIMIT)
    jpeg = encode(gradient_image(200, 200), "JPEG")
    with pytest.raises(ImageDecodeError, match="truncated"):
        decode_image(jpeg[: len(jpeg) // 2], LIMIT)


def test_pixel_limit_is_checked_before_decoding() -> None:
    """An image over the pixel limit is refused, with its size in the message."""
    big = encode(Image.new("L", (4000, 3000)), "PNG")
    with pytest.raises(ImageTooLarge, match="4000x3000"):
        decode_image(big, 1_000_000)


def test_first_frame_of_an_animation_is_used() -> None:
    """An animated GIF decodes to its first frame."""
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:])
    decoded = decode_image(out.getvalue(), LIMIT)
    r, _g, b = decoded.getpixel((0, 0))  # type: ignore[misc]
    assert r > 200
    assert b < 50


def test_resize_modes_and_batch_shape() -> None:
    """Both resize modes give size x size; the batch is N x 3 x S x S and normalised."""
    image = gradient_image(100, 50)
    assert resize(image, 32, "squash").size == (32, 32)
    assert resize(image, 32, "crop").size == (32, 32)
    batch = to_batch([image, image], 32, "squash", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert batch.shape == (2, 3, 32, 32)
    assert float(batch.min()) >= -1.0
    assert float(batch.max()) <= 1.0


def test_draft_decodes_large_jpegs_small_but_keeps_their_size() -> None:
    """A large JPEG decodes at reduced scale (both sides >= draft_px); the original size is kept."""
    data = encode(gradient_image(2000, 1200), "JPEG")
    full = decode(data, LIMIT)
    drafted = decode(data, LIMIT, draft_px=256)
    assert full.image.size == (2000, 1200)
    assert drafted.image.size == (500, 300)
    assert (drafted.width, drafted.height) == (2000, 1200)
    small = decode(encode(gradient_image(300, 200), "JPEG"), LIMIT, draft_px=256)
    assert small.image.size == (300, 200)


def test_original_size_is_upright_for_rotated_jpegs() -> None:
    """With EXIF orientation 6, the reported size is the rotated one, drafted or not."""
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(gradient_image(1600, 800), "JPEG", exif=exif.tobytes())
    drafted = decode(data, LIMIT, draft_px=128)
    assert (drafted.width, drafted.height) == (800, 1600)
    assert drafted.image.height > drafted.image.width
