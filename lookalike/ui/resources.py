"""What the pages share: one cached client per server address, and display helpers."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime
from pathlib import PurePosixPath

import streamlit as st
from PIL import Image, ImageDraw, ImageOps

from lookalike.services.client import (
    ClientConfig,
    ClientError,
    LookalikeClient,
    client_config_from_env,
)

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


def show_error(client: LookalikeClient, exc: ClientError, action: str = "search") -> None:
    """The failure of `action` ("search", "ingest", ...) in words a person can act on; never a
    traceback. Errors the server answered carry its request id, to find the call in its log."""
    reference = f" (request id {exc.request_id})" if exc.request_id else ""
    if exc.code.name == "DEADLINE_EXCEEDED":
        st.error(
            f"The Lookalike server at {client.address} did not answer within "
            f"{client.timeout_s:g} s. It may be overloaded or unreachable; try again shortly.",
            icon=":material/timer_off:",
        )
    elif exc.unreachable:
        st.error(
            f"Cannot reach the Lookalike server at {client.address}. Check that "
            "`lookalike serve` is running there and that LOOKALIKE_CLIENT__ADDRESS points to it.",
            icon=":material/cloud_off:",
        )
    elif exc.code.name == "UNAVAILABLE":
        st.error(
            f"The Lookalike server at {client.address} is up but cannot reach what it depends "
            f"on: {markdown_text(exc.message)}{reference}",
            icon=":material/cloud_off:",
        )
    elif exc.code.name in ("UNAUTHENTICATED", "PERMISSION_DENIED") and "token" in exc.message:
        st.error(
            f"The Lookalike server at {client.address} refused this client's credentials. "
            "Set LOOKALIKE_CLIENT__TOKEN to one of the server's tokens and reload.",
            icon=":material/lock:",
        )
    elif exc.code.name in ("INVALID_ARGUMENT", "FAILED_PRECONDITION", "NOT_FOUND",
                           "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "UNAUTHENTICATED"):
        st.error(f"The server refused this {action}: {markdown_text(exc.message)}",
                 icon=":material/error:")
    else:
        st.error(f"The {action} failed: {markdown_text(exc.message or exc.code.name)}{reference}",
                 icon=":material/error:")


def page_client() -> LookalikeClient | None:
    """The client for this page, or None after saying why the settings are unusable."""
    try:
        return get_client()
    except ValueError as exc:
        st.error(f"The UI's server settings are invalid: {exc}", icon=":material/settings:")
        return None


@st.cache_data(ttl=10, show_spinner=False)
def _serving(config: ClientConfig) -> bool:
    return client_for(config).healthy()


def sidebar_status(client: LookalikeClient) -> None:
    """The server's address and whether it is serving, in the sidebar of every page."""
    serving = _serving(client.config)
    state = ":green-badge[serving]" if serving else ":red-badge[not serving]"
    st.sidebar.caption(f"Server {markdown_text(client.address)} {state}")


@st.cache_data(ttl=10, show_spinner=False)
def label_counts(config: ClientConfig) -> dict[str, int]:
    """Images per label on the server `config` names, cached for a few seconds.

    Raises ClientError (never cached) when the server cannot say.
    """
    return client_for(config).count_labels()


CropBox = tuple[float, float, float, float]
# The whole image, as (left, top, right, bottom) fractions of its width and height.
FULL_CROP: CropBox = (0.0, 0.0, 1.0, 1.0)


def _pixel_box(image: Image.Image, box: CropBox) -> tuple[int, int, int, int]:
    left, top, right, bottom = box
    w, h = image.size
    x0, y0 = min(int(left * w), w - 1), min(int(top * h), h - 1)
    return x0, y0, max(x0 + 1, round(right * w)), max(y0 + 1, round(bottom * h))


@st.cache_data(show_spinner=False, max_entries=32)
def cropped(data: bytes, box: CropBox) -> bytes | None:
    """The region `box` of the encoded image `data`, as JPEG; None if it won't decode."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    out = io.BytesIO()
    image.crop(_pixel_box(image, box)).save(out, format="JPEG", quality=95)
    return out.getvalue()


@st.cache_data(show_spinner=False, max_entries=32)
def outlined(data: bytes, size: int, box: CropBox) -> bytes | None:
    """`data` shrunk to fit size×size with the region `box` framed and the rest dimmed."""
    image = _decoded(data, size)
    if image is None:
        return None
    pixels = _pixel_box(image, box)
    shade = Image.new("RGBA", image.size, (0, 0, 0, 120))
    shade.paste((0, 0, 0, 0), pixels)
    framed = Image.alpha_composite(Image.alpha_composite(
        Image.new("RGBA", image.size, "white"), image), shade)
    ImageDraw.Draw(framed).rectangle(
        (pixels[0], pixels[1], pixels[2] - 1, pixels[3] - 1), outline=(255, 75, 75), width=3
    )
    return _jpeg(framed.convert("RGB"))


def ingested_text(unix_s: int) -> str:
    """When an image was ingested, in UTC ("unknown" where the server did not say)."""
    if unix_s <= 0:
        return "unknown"
    return datetime.fromtimestamp(unix_s, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def label_text(label: str) -> str:
    """A label as people read it ("(no label)" for the empty one)."""
    return label or "(no label)"
