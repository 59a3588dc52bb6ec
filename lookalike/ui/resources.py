"""What the pages share: one cached client per server address, and display helpers."""

from __future__ import annotations

import io
import re
from pathlib import PurePosixPath

import streamlit as st
from PIL import Image, ImageOps

from lookalike.services.client import ClientConfig, LookalikeClient, client_config_from_env

UPLOAD_TYPES = ("jpg", "jpeg", "png", "webp", "gif", "bmp")
# Streamlit's secondary background, so letterboxed tiles blend into bordered cards.
TILE_BACKGROUND = (240, 242, 246)
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>#+\-|~$:])")


@st.cache_resource(show_spinner=False)
def client_for(config: ClientConfig) -> LookalikeClient:
    """One client (one gRPC channel) per server configuration, shared by every session."""
    return config.connect()


def forget_client(client: LookalikeClient) -> None:
    """Drop `client` from the cache so the next run dials afresh.

    A gRPC channel that failed to connect waits out a reconnect backoff before it tries again;
    a new channel lets "Try again" reach a server that has just come up.
    """
    client_for.clear(client.config)


def get_client() -> LookalikeClient:
    """The client for the server LOOKALIKE_CLIENT__ADDRESS names.

    Keyed by address rather than cached bare, so a changed address never reuses an old channel.
    Raises ValueError (pydantic's ValidationError) when the client settings are invalid.
    """
    return client_for(client_config_from_env())


def _decoded(data: bytes, size: int) -> Image.Image | None:
    """`data` decoded, upright, RGBA, within size×size; None if it is not an image PIL reads."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            image = ImageOps.exif_transpose(opened)
            image.thumbnail((size, size))
            return image.convert("RGBA")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


@st.cache_data(show_spinner=False, max_entries=1024)
def tile(data: bytes, size: int) -> bytes | None:
    """The encoded image `data` centred in a size×size square, as JPEG; None if it won't decode.

    Square tiles keep every row of the result grid the same height whatever the aspect ratios.
    """
    image = _decoded(data, size)
    if image is None:
        return None
    canvas = Image.new("RGB", (size, size), TILE_BACKGROUND)
    canvas.paste(image, ((size - image.width) // 2, (size - image.height) // 2), image)
    return _jpeg(canvas)


@st.cache_data(show_spinner=False, max_entries=64)
def downsized(data: bytes, size: int) -> bytes | None:
    """The encoded image `data` shrunk to fit size×size, as JPEG; None if it won't decode.

    The browser then gets a small preview rather than the whole upload.
    """
    image = _decoded(data, size)
    if image is None:
        return None
    canvas = Image.new("RGB", image.size, "white")
    canvas.paste(image, (0, 0), image)
    return _jpeg(canvas)


def source_name(source: str) -> str:
    """The file name at the end of a path, S3 key or URL (the whole source if it has none)."""
    return PurePosixPath(source.split("?", 1)[0]).name or source


def markdown_text(text: str) -> str:
    """`text` escaped so Markdown shows it as written (file names and labels come from users)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)
