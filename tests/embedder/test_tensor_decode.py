"""Tensor JPEG decoding (nvJPEG on CUDA, libjpeg-turbo here): which files it takes, that it
matches PIL, and that every other input falls back to PIL with the same outcomes."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from lookalike.embedder.errors import ImageDecodeError, ImageTooLarge
from lookalike.embedder.runtime import Embedder, EmbedderConfig
from lookalike.embedder.tensor_decode import decode_jpegs, resize_tensor, tensor_decodable
from lookalike.embedder.transforms import resize
from tests.conftest import encode, gradient_image, needs_cuda

CPU = torch.device("cpu")
MAX_PIXELS = 1_000_000


def _photo(seed: int = 0) -> Image.Image:
    return gradient_image(160, 120, seed=seed)


def _rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(_photo(), exif=exif.tobytes())


def test_only_complete_upright_rgb_or_grey_jpegs_are_taken() -> None:
    """Everything the tensor decoder could get wrong or cannot judge goes to PIL."""
    jpeg = encode(_photo())
    assert tensor_decodable(jpeg, MAX_PIXELS)
    assert tensor_decodable(encode(_photo().convert("L")), MAX_PIXELS)
    refused = {
        "truncated": jpeg[: len(jpeg) // 2],
        "cmyk": encode(_photo().convert("CMYK")),
        "exif rotated": _rotated_jpeg(),
        "png": encode(_photo(), "PNG"),
        "empty": b"",
        "text": b"\xff\xd8 this is not a jpeg \xff\xd9",
    }
    assert {name for name, data in refused.items() if tensor_decodable(data, MAX_PIXELS)} == set()
    assert not tensor_decodable(jpeg, 160 * 120 - 1)


def test_decoded_pixels_match_pil() -> None:
    """libjpeg-turbo through torchvision and through Pillow agree to a grey level or two."""
    data = encode(_photo(), quality=95)
    tensor = decode_jpegs([data], CPU)[0]
    assert tensor is not None
    assert tensor.shape == (3, 120, 160)
    assert tensor.dtype == torch.uint8
    pil = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32)
    assert np.abs(tensor.permute(1, 2, 0).numpy().astype(np.float32) - pil).mean() < 2.0


def test_a_refused_file_in_a_batch_fails_alone() -> None:
    """A batch the decoder refuses is decoded one by one: only the bad file gives None."""
    good = encode(_photo())
    out = decode_jpegs([good, b"\xff\xd8broken\xff\xd9", encode(_photo(1))], CPU)
    assert [t is None for t in out] == [False, True, False]


@pytest.mark.parametrize("mode", ["squash", "crop"])
def test_resize_matches_pil(mode: str) -> None:
    """Antialiased bilinear on the tensor is PIL's resize to within a few grey levels."""
    image = _photo()
    tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()
    out = resize_tensor(tensor, 64, mode)  # type: ignore[arg-type]
    assert out.shape == (64, 64, 3)
    assert out.dtype == torch.uint8
    pil = np.asarray(resize(image, 64, mode), dtype=np.float32)  # type: ignore[arg-type]
    assert np.abs(out.numpy().astype(np.float32) - pil).mean() < 3.0


def test_tensor_decoder_keeps_one_outcome_per_input_in_order() -> None:
    """JPEGs go through tensors, the rest through PIL; bad files fail alone, by name; the
    descriptors match the PIL path's."""
    inputs = [
        encode(_photo(0)),
        b"not an image",
        encode(_photo(1), "PNG"),
        encode(_photo(2).convert("CMYK")),
        encode(_photo(3))[:300],
        _rotated_jpeg(),
        encode(gradient_image(1200, 1000, seed=4)),
    ]
    common = dict(backbone="mobilenet_v2", threads=2, input_size=64, max_pixels=MAX_PIXELS,
                  batch_size=3, decode_px=0)
    tensor = Embedder(EmbedderConfig(**common, decoder="tensor")).embed_bytes(inputs)  # type: ignore[arg-type]
    pil = Embedder(EmbedderConfig(**common, decoder="pil")).embed_bytes(inputs)  # type: ignore[arg-type]
    assert [o.ok for o in tensor] == [True, False, True, True, False, True, False]
    assert [type(o.error) for o in tensor] == [type(o.error) for o in pil]
    assert isinstance(tensor[1].error, ImageDecodeError)
    assert isinstance(tensor[6].error, ImageTooLarge)
    for ours, theirs in zip(tensor, pil, strict=True):
        if ours.vector is not None and theirs.vector is not None:
            assert float(ours.vector @ theirs.vector) > 0.99


def test_auto_decoder_is_pil_on_the_cpu() -> None:
    """On the CPU, PIL's reduced-scale decode is faster, so `auto` keeps it."""
    assert not Embedder(EmbedderConfig(device="cpu")).decodes_on_device
    assert Embedder(EmbedderConfig(device="cpu", decoder="tensor")).decodes_on_device


@needs_cuda
def test_nvjpeg_on_cuda_matches_the_cpu_decoder() -> None:
    """Batched nvJPEG gives the CPU decoder's pixels to within a few grey levels."""
    blobs = [encode(_photo(s), quality=95) for s in range(4)]
    on_gpu = decode_jpegs(blobs, torch.device("cuda"))
    on_cpu = decode_jpegs(blobs, CPU)
    for gpu, cpu in zip(on_gpu, on_cpu, strict=True):
        assert gpu is not None
        assert cpu is not None
        assert gpu.device.type == "cuda"
        assert (gpu.cpu().float() - cpu.float()).abs().mean() < 2.0
