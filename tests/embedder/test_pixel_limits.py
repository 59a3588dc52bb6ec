"""The pixel limit of decode(): every refusal names the configured limit, even for images over
Pillow's own limit, which Image.open enforces before our check runs."""

from __future__ import annotations

import struct

import pytest
from PIL import Image

from lookalike.embedder.errors import ImageTooLarge
from lookalike.embedder.transforms import decode
from tests.bad_images import decompression_bomb

PILLOW_LIMIT = 2 * 89_478_485  # Image.open refuses above this (twice MAX_IMAGE_PIXELS)


def test_pillow_limit_is_the_one_assumed_here() -> None:
    """Pillow's default refusal threshold is the 178,956,970 pixels these tests go past."""
    assert Image.MAX_IMAGE_PIXELS is not None
    assert 2 * Image.MAX_IMAGE_PIXELS == PILLOW_LIMIT


@pytest.mark.parametrize("max_pixels", [1_000_000, 50_000_000])
def test_bomb_over_pillows_limit_names_size_and_configured_limit(max_pixels: int) -> None:
    """A 20000x20000 PNG (50 kB) is refused with its size and the configured limit, not
    Pillow's."""
    bomb = decompression_bomb(20_000, 20_000, bit_depth=1)
    with pytest.raises(ImageTooLarge) as info:
        decode(bomb, max_pixels)
    assert str(info.value) == (
        f"20000x20000 = 400,000,000 pixels is over the limit of {max_pixels:,}"
    )


def test_size_is_read_even_when_the_configured_limit_is_above_pillows() -> None:
    """With a limit above Pillow's, an image between the two is measured against ours: a
    13500x13300 header under a 179,000,000 limit is refused by size, not by Pillow."""
    bomb = decompression_bomb(13_500, 13_300, bit_depth=1)
    assert PILLOW_LIMIT < 13_500 * 13_300
    with pytest.raises(ImageTooLarge) as info:
        decode(bomb, 179_000_000)
    assert str(info.value) == "13500x13300 = 179,550,000 pixels is over the limit of 179,000,000"


def _gif_with_oversized_frame(width: int, height: int) -> bytes:
    """A 1x1 GIF whose one frame claims width x height (Pillow checks it while opening)."""
    screen = struct.pack("<HHBBB", 1, 1, 0, 0, 0)
    frame = b"," + struct.pack("<HHHHB", 0, 0, width, height, 0)
    return b"GIF89a" + screen + frame + b"\x02\x02\x4c\x01\x00;"


def test_bomb_pillow_refuses_inside_its_plugin_names_pixels_and_configured_limit() -> None:
    """A GIF frame over Pillow's limit, refused inside the plugin where no width and height
    reach us, still gives its pixel count and the configured limit."""
    with pytest.raises(ImageTooLarge) as info:
        decode(_gif_with_oversized_frame(20_000, 20_000), 50_000_000)
    assert str(info.value) == "400,000,000 pixels is over the limit of 50,000,000"
