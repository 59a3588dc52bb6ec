"""JPEG decoding and resizing as tensors on the embedder's device (batched nvJPEG on CUDA,
libjpeg-turbo on the CPU), for the inputs it can take; every other input goes to the PIL path
in `transforms`, which also gives the clear error for a bad one."""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from lookalike.embedder.transforms import ResizeMode

_RGB_MODES = frozenset({"RGB", "L"})
_EXIF_ORIENTATION = 0x0112
_EOI = b"\xff\xd9"


def tensor_decodable(data: bytes, max_pixels: int) -> bool:
    """Whether `data` is a complete baseline RGB or grey JPEG, upright, within `max_pixels`.

    Read from the header only. CMYK, EXIF-rotated, truncated or oversized files, and every
    other format, are left to the PIL path, which handles or refuses them by name."""
    if not data.startswith(b"\xff\xd8") or not data.rstrip(b"\x00").endswith(_EOI):
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as probe:
                width, height = probe.size
                return (
                    probe.format == "JPEG" and probe.mode in _RGB_MODES
                    and width * height <= max_pixels
                    and probe.getexif().get(_EXIF_ORIENTATION, 1) == 1
                )
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            return False


def decode_jpegs(blobs: Sequence[bytes], device: torch.device) -> list[torch.Tensor | None]:
    """3 x H x W uint8 RGB tensors on `device`, one per blob in order; None where the decoder
    refuses a blob (the PIL path then decodes it or names what is wrong)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    if not blobs:
        return []
    encoded = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in blobs]
    try:
        # One call decodes the whole list: on CUDA, nvJPEG's batched decoder.
        return list(decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device))
    except RuntimeError:
        pass
    out: list[torch.Tensor | None] = []
    for tensor in encoded:
        try:
            out.append(decode_jpeg(tensor, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            out.append(None)
    return out


def resize_tensor(image: torch.Tensor, size: int, mode: ResizeMode) -> torch.Tensor:
    """3 x H x W uint8 -> size x size x 3 uint8 on the same device: squashed whole, or the
    centre after scaling the short side, as `transforms.resize` does with PIL (antialiased
    bilinear)."""
    _, height, width = image.shape
    if mode == "squash":
        target = (size, size)
    else:
        scale = size / min(width, height)
        target = (max(size, round(height * scale)), max(size, round(width * scale)))
    scaled = F.interpolate(image.unsqueeze(0).float(), size=target, mode="bilinear",
                           antialias=True, align_corners=False)[0]
    if mode == "crop":
        top = (scaled.shape[1] - size) // 2
        left = (scaled.shape[2] - size) // 2
        scaled = scaled[:, top:top + size, left:left + size]
    return scaled.round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0)
