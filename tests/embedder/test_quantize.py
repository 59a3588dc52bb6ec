"""int8 as an explicit precision: a static int8 graph calibrated on real photographs gives
descriptors close to fp32 ones, is its own embedding (spec), and is refused where it cannot run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from lookalike.embedder.accel import AccelUnsupported
from lookalike.embedder.engines import EngineUnavailable
from lookalike.embedder.errors import EmbedderError
from lookalike.embedder.quantize import (
    CALIBRATION_BATCH,
    IMAGES_PER_PASS,
    QuantizationError,
    calibration_count,
    int8_id,
    quantize_int8,
)
from lookalike.embedder.runtime import Embedder, EmbedderConfig

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry",
          "hubble_deep_field", "cat", "retina")


def _crops(count: int, seed: int) -> list[Image.Image]:
    """`count` random crops (some mirrored) of the photographs scikit-image ships."""
    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(getattr(data, name)()) for name in PHOTOS]
    crops = []
    for i in range(count):
        photo = photos[i % len(photos)]
        w, h = photo.size
        cw, ch = int(w * rng.uniform(0.5, 1.0)), int(h * rng.uniform(0.5, 1.0))
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = photo.crop((left, top, left + cw, top + ch))
        crops.append(crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if i % 2 else crop)
    return crops


@pytest.fixture(scope="module")
def fp32() -> Embedder:
    """The default model in fp32 on ONNX Runtime."""
    embedder = Embedder(EmbedderConfig(threads=2, warmup=False))
    embedder.load()
    return embedder


@pytest.fixture(scope="module")
def int8_graph(fp32: Embedder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model's int8 graph, calibrated on one pass of 40 crops."""
    crops = _crops(IMAGES_PER_PASS, seed=1)
    batches = [fp32.pixels(crops[i:i + CALIBRATION_BATCH]).numpy()
               for i in range(0, len(crops), CALIBRATION_BATCH)]
    path = tmp_path_factory.mktemp("int8") / "lite0-int8.onnx"
    path.write_bytes(quantize_int8(fp32.onnx_graph(), batches))
    return path


def test_int8_descriptors_are_close_to_fp32_and_another_embedding(
    fp32: Embedder, int8_graph: Path
) -> None:
    """On photographs it was not calibrated on, int8 descriptors agree with fp32 ones to cosine
    0.98 (median; the recipe measured 0.99), the graph is under half the size, and the spec
    names the int8 graph, so its vectors never mix with fp32 ones."""
    int8 = Embedder(replace(fp32.config, precision="int8", int8_model=int8_graph))
    photos = _crops(16, seed=2)
    cosines = np.sum(int8.embed_images(photos) * fp32.embed_images(photos), axis=1)
    assert np.median(cosines) >= 0.98, cosines
    assert cosines.min() >= 0.9, cosines
    assert int8_graph.stat().st_size < len(fp32.onnx_graph()) / 2
    assert int8.spec.quantization == int8_id(int8_graph.read_bytes())
    assert int8.spec != fp32.spec
    assert int8.spec.to_dict()["quantization"].startswith("int8-")
    assert "quantization" not in fp32.spec.to_dict()
    assert int8.plan.describe() == "cpu int8"


def test_int8_is_refused_where_it_cannot_run(int8_graph: Path) -> None:
    """Without its graph, on torch, in an ensemble, with several input sizes, on CUDA, and with
    a graph of another model: each refused with what to do."""
    base = EmbedderConfig(precision="int8", warmup=False, int8_model=int8_graph)
    cases = [
        (replace(base, int8_model=None), "lookalike quantize"),
        (replace(base, engine="torch"), "runs on onnxruntime"),
        (replace(base, backbone="efficientnet_lite0+mobilenet_v2"), "one backbone"),
        (replace(base, scales=(1.0, 0.75)), "one input size"),
        (replace(base, backbone="mobilenet_v2", input_size=160), "made for another model"),
    ]
    for config, reason in cases:
        with pytest.raises((EmbedderError, EngineUnavailable), match=reason):
            Embedder(config).load()
    with pytest.raises(AccelUnsupported, match="CPU"):
        Embedder(EmbedderConfig(precision="int8", device="cuda"))


def test_calibration_uses_whole_passes() -> None:
    """Calibration sets are cut to whole passes of 40 images; fewer than one is refused."""
    assert calibration_count(119) == 80
    assert calibration_count(40) == 40
    with pytest.raises(QuantizationError, match="at least 40"):
        calibration_count(39)
