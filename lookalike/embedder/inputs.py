"""What the embedder takes in, and encoded images turned into it: JPEGs the tensor decoder can
take decoded together on the device, everything else through PIL, which names what is wrong
with a bad file."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from lookalike.embedder.errors import ImageError
from lookalike.embedder.tensor_decode import decode_jpegs, tensor_decodable
from lookalike.embedder.transforms import decode

# An RGB image the embedder takes: a PIL image, or a 3 x H x W uint8 tensor already on the
# device (from `decode_jpegs`).
EmbedInput = Image.Image | torch.Tensor


def decode_chunk(blobs: Sequence[bytes], max_pixels: int, draft_px: int,
                 device: torch.device | None) -> list[EmbedInput | ImageError]:
    """Each encoded image decoded, or why it cannot be, in order. With a `device`, the JPEGs
    the tensor decoder takes are decoded there in one batch; the rest (and any it refuses)
    through PIL at `draft_px`."""
    on_device: dict[int, torch.Tensor] = {}
    if device is not None:
        picks = [i for i, data in enumerate(blobs) if tensor_decodable(data, max_pixels)]
        for i, tensor in zip(picks, decode_jpegs([blobs[i] for i in picks], device), strict=True):
            if tensor is not None:
                on_device[i] = tensor
    out: list[EmbedInput | ImageError] = []
    for i, data in enumerate(blobs):
        if i in on_device:
            out.append(on_device[i])
            continue
        try:
            out.append(decode(data, max_pixels, draft_px).image)
        except ImageError as exc:
            out.append(exc)
    return out
