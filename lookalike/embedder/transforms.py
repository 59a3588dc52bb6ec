"""Bytes -> RGB image -> normalised tensor, with clear errors for inputs that are not usable."""

from __future__ import annotations

import io
import re
import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from lookalike.embedder.errors import ImageDecodeError, ImageTooLarge

ResizeMode = Literal["squash", "crop"]
_BACKGROUND = (255, 255, 255)


_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded, upright RGB image and the upright size of the original (before any draft)."""

    image: Image.Image
    width: int
    height: int


def decode_image(data: bytes, max_pixels: int, draft_px: int = 0) -> Image.Image:
    """`decode(data, max_pixels, draft_px).image`."""
    return decode(data, max_pixels, draft_px).image


def decode(data: bytes, max_pixels: int, draft_px: int = 0) -> Decoded:
    """Decode `data` into an upright 8-bit RGB image.

    Applies the EXIF orientation, takes the first frame of animations, flattens transparency
    onto white and scales 16-bit and float images to 8 bits. Raises ImageDecodeError for bytes
    that are not a complete image and ImageTooLarge above `max_pixels` (checked from the header,
    before the pixels are decoded). With `draft_px`, a JPEG is decoded at the smallest DCT
    scale (1/2, 1/4, 1/8) that keeps both sides at least `draft_px`: several times cheaper for
    camera photos, and nothing downstream (a 224 px model input, a 256 px thumbnail) needs more.
    """
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    with warnings.catch_warnings():
        # Our own pixel limit replaces Pillow's decompression-bomb heuristics.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = _open(data, max_pixels)
        width, height = image.size
        if width * height > max_pixels:
            raise ImageTooLarge(
                f"{width}x{height} = {width * height:,} pixels is over the limit of {max_pixels:,}"
            )
        try:
            if draft_px and image.format == "JPEG":
                image.draft(image.mode, (draft_px, draft_px))
            image.seek(0)
            image.load()
        except Image.DecompressionBombError as exc:
            raise ImageTooLarge(_refused_by_pillow(exc, max_pixels)) from exc
        except (OSError, ValueError, SyntaxError) as exc:
            raise ImageDecodeError(f"corrupt or truncated {image.format} image: {exc}") from exc
        if image.getexif().get(0x0112) in _SWAPPING_ORIENTATIONS:
            width, height = height, width
    return Decoded(to_rgb(ImageOps.exif_transpose(image)), width, height)


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """`data` opened (its header read, no pixels decoded).

    Image.open refuses an image over twice Pillow's MAX_IMAGE_PIXELS before the caller sees its
    size; its format's plugin then reads the header without that check, so the caller can name
    the size and hold it to `max_pixels` instead.
    """
    try:
        return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        image = _open_past_pillow_limit(data)
        if image is None:
            raise ImageTooLarge(_refused_by_pillow(exc, max_pixels)) from exc
        return image
    except UnidentifiedImageError:
        raise ImageDecodeError("not a recognised image format") from None
    except OSError as exc:
        raise ImageDecodeError(f"cannot read image: {exc}") from exc


def _open_past_pillow_limit(data: bytes) -> Image.Image | None:
    """`data` opened by the first Pillow plugin that accepts its header, without Image.open's
    decompression-bomb check; None when none does (some plugins check the size themselves)."""
    Image.init()
    prefix = data[:16]
    for name in Image.ID:
        factory, accept = Image.OPEN[name]
        accepted = accept(prefix) if accept is not None else True
        if not accepted or isinstance(accepted, str):
            continue
        try:
            return factory(io.BytesIO(data), "")
        except (SyntaxError, IndexError, TypeError, ValueError, OSError, struct.error,
                Image.DecompressionBombError):
            continue
    return None


def _refused_by_pillow(exc: Image.DecompressionBombError, max_pixels: int) -> str:
    """Why Pillow refused an image whose width and height are not known here, in terms of the
    configured `max_pixels` (Pillow's message names only its own limit)."""
    counted = re.search(r"\((\d+) pixels\)", str(exc))
    if counted is None:
        return f"the image is over the limit of {max_pixels:,} pixels"
    pixels = int(counted[1])
    if pixels > max_pixels:
        return f"{pixels:,} pixels is over the limit of {max_pixels:,}"
    return f"{pixels:,} pixels is within the limit of {max_pixels:,} but over Pillow's ({exc})"


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB; transparency is composited onto white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        high = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        scaled = np.clip(array / high * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(scaled).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, _BACKGROUND)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image if image.mode == "RGB" else image.convert("RGB")


def resize(image: Image.Image, size: int, mode: ResizeMode) -> Image.Image:
    """`image` as `size` x `size`: squashed whole, or its centre after scaling the short side."""
    if mode == "squash":
        return image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    width, height = image.size
    scale = size / min(width, height)
    scaled = image.resize(
        (max(size, round(width * scale)), max(size, round(height * scale))),
        Image.Resampling.BILINEAR, reducing_gap=3.0,
    )
    left = (scaled.width - size) // 2
    top = (scaled.height - size) // 2
    return scaled.crop((left, top, left + size, top + size))


def to_uint8_batch(images: Sequence[Image.Image], size: int, mode: ResizeMode) -> torch.Tensor:
    """RGB images resized as one N x size x size x 3 uint8 tensor (4x smaller to copy to a
    device than its float form)."""
    return torch.from_numpy(
        np.stack([np.asarray(resize(im, size, mode), dtype=np.uint8) for im in images])
    )


def normalise(batch_u8: torch.Tensor, mean: Sequence[float], std: Sequence[float],
              channels_last: bool = False) -> torch.Tensor:
    """N x H x W x 3 uint8 -> N x 3 x H x W float32 normalised, on the batch's device."""
    batch = batch_u8.permute(0, 3, 1, 2).float().div_(255.0)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=batch.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=batch.device).view(1, 3, 1, 1)
    out = (batch - mean_t) / std_t
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out


def to_batch(
    images: Sequence[Image.Image],
    size: int,
    mode: ResizeMode,
    mean: Sequence[float],
    std: Sequence[float],
) -> torch.Tensor:
    """RGB images as one normalised N x 3 x size x size float tensor."""
    return normalise(to_uint8_batch(images, size, mode), mean, std)


_FORMAT_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp",
                      "TIFF": "tif", "MPO": "jpg"}
_CONTENT_TYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp",
                  "gif": "image/gif", "bmp": "image/bmp", "tif": "image/tiff"}


def image_extension(data: bytes) -> str:
    """File extension for the image format of `data`, read from its header (whatever its size:
    decode() has held it to the configured pixel limit, which may be above Pillow's)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            probe: Image.Image | None = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError:
            probe = _open_past_pillow_limit(data)
    if probe is None:
        return "bin"
    with probe:
        fmt = str(probe.format or "bin")
    return _FORMAT_EXTENSIONS.get(fmt, fmt.lower())


def content_type(extension: str) -> str:
    """The MIME type stored with a blob of this extension."""
    return _CONTENT_TYPES.get(extension, f"image/{extension}")


def thumbnail_jpeg(image: Image.Image, max_px: int) -> bytes:
    """A JPEG of `image` no larger than `max_px` on its longer side, aspect kept."""
    thumb = image.copy()
    thumb.thumbnail((max_px, max_px), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    thumb.save(out, format="JPEG", quality=85, optimize=True)
    return out.getvalue()
