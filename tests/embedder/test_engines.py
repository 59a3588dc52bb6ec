"""The engines under the Embedder: ONNX Runtime gives the descriptors and categories torch gives
(cosine >= 0.9999 on real photographs, for every pooling, the semantic head, ensembles,
test-time passes and a fine-tuned weights file), its exported graphs are cached and rebuilt
when the model changes, and `auto` picks the engine the issue asks for."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from lookalike.embedder import engines
from lookalike.embedder.accel import plan_for
from lookalike.embedder.backbones import build_backbone
from lookalike.embedder.engines import EngineUnavailable, choose_engine
from lookalike.embedder.runtime import Embedder, EmbedderConfig

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")
MIN_COSINE = 0.9999


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    """Real photographs that scikit-image ships, of several sizes and kinds."""
    return [Image.fromarray(getattr(data, name)()) for name in PHOTOS]


def _pair(**options: Any) -> tuple[Embedder, Embedder]:
    """The same embedder on torch and on ONNX Runtime, loaded."""
    common = {"device": "cpu", "threads": 2, "warmup": False, **options}
    on_torch = Embedder(EmbedderConfig(engine="torch", **common))
    on_onnx = Embedder(EmbedderConfig(engine="onnxruntime", **common))
    on_torch.load()
    on_onnx.load()
    assert (on_torch.engine, on_onnx.engine) == ("torch", "onnxruntime")
    return on_torch, on_onnx


def _assert_parity(on_torch: Embedder, on_onnx: Embedder, photos: list[Image.Image]) -> None:
    """Per image, the two descriptors agree to MIN_COSINE and the predicted categories match;
    the specs are the same (a collection built with one is searched with the other)."""
    assert on_torch.spec == on_onnx.spec
    expected, expected_classes = on_torch.embed_images_with_categories(photos)
    got, got_classes = on_onnx.embed_images_with_categories(photos)
    assert got.shape == expected.shape
    cosines = np.sum(expected * got, axis=1)
    assert cosines.min() >= MIN_COSINE, cosines
    assert got_classes == expected_classes


@pytest.mark.parametrize("options", [
    {},
    {"pooling": "mac"},
    {"pooling": "spoc"},
    {"pooling": "rmac"},
    {"gem_p": 3.0},
    {"semantic_weight": 0.5},
    {"scales": (0.75, 1.0), "flip": True},
    {"input_size": 160},
    {"backbone": "mobilenet_v2"},
    {"backbone": "efficientnet_lite0+mobilenet_v2"},
], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_onnx_runtime_agrees_with_torch(photos: list[Image.Image], options: dict[str, Any]) -> None:
    """Every pooling, p, the semantic head, test-time passes, another input size, another
    backbone and an ensemble: the same descriptors and categories on both engines."""
    _assert_parity(*_pair(**options), photos)


def test_a_fine_tuned_weights_file_exports_as_trained(photos: list[Image.Image],
                                                      tmp_path: Path) -> None:
    """A weights file (as fine-tuning and the model registry write them) runs the same on both
    engines, and differs from the default weights."""
    root = build_backbone("efficientnet_lite0").root
    assert root is not None
    generator = torch.Generator().manual_seed(0)
    # Convolution and linear weights moved a little, as a fine-tuning step would move them.
    state = {name: value + 0.01 * torch.randn(value.shape, generator=generator)
             if value.is_floating_point() and value.ndim >= 2 else value
             for name, value in root.state_dict().items()}
    weights = tmp_path / "tuned.pt"
    torch.save(state, weights)
    on_torch, on_onnx = _pair(weights=weights)
    _assert_parity(on_torch, on_onnx, photos)
    default = Embedder(EmbedderConfig(device="cpu", threads=2, warmup=False))
    assert default.spec.weights != on_onnx.spec.weights


def _cached(cache: Path) -> list[Path]:
    return sorted(cache.glob("*.onnx"))


def test_exported_graphs_are_cached_and_rebuilt_when_the_model_changes(
    photos: list[Image.Image], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A load writes one graph per input size; the next load reads it without exporting; another
    p or input size writes another; nothing half-written is left behind."""
    cache = tmp_path / "onnx"
    first = Embedder(EmbedderConfig(engine="onnxruntime", cache_dir=cache, threads=2))
    expected = first.embed_images(photos[:2])
    assert len(_cached(cache)) == 1

    exports: list[int] = []
    real_export = engines.export_onnx

    def counted(net: torch.nn.Module, size: int) -> bytes:
        exports.append(size)
        return real_export(net, size)

    monkeypatch.setattr(engines, "export_onnx", counted)
    again = Embedder(EmbedderConfig(engine="onnxruntime", cache_dir=cache, threads=2))
    np.testing.assert_array_equal(again.embed_images(photos[:2]), expected)
    assert exports == []

    Embedder(EmbedderConfig(engine="onnxruntime", cache_dir=cache, gem_p=2.0)).load()
    Embedder(EmbedderConfig(engine="onnxruntime", cache_dir=cache, scales=(1.0, 1.25))).load()
    assert exports == [224, 280]
    assert len(_cached(cache)) == 3
    assert [p for p in cache.iterdir() if p.suffix != ".onnx"] == []


def test_a_damaged_cache_file_is_exported_again(
    photos: list[Image.Image], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A truncated graph in the cache is noticed, exported again and replaced."""
    cache = tmp_path / "onnx"
    expected = Embedder(EmbedderConfig(engine="onnxruntime", cache_dir=cache)).embed_images(
        photos[:1])
    (path,) = _cached(cache)
    path.write_bytes(path.read_bytes()[:1000])
    with caplog.at_level(logging.WARNING, logger="lookalike.embedder"):
        repaired = Embedder(EmbedderConfig(engine="onnxruntime", cache_dir=cache))
        np.testing.assert_array_equal(repaired.embed_images(photos[:1]), expected)
    assert "does not load" in caplog.text
    assert path.stat().st_size > 1_000_000


@pytest.mark.parametrize(("options", "engine"), [
    ({}, "onnxruntime"),
    ({"precision": "bf16"}, "torch"),
    ({"compile_net": True}, "torch"),
    ({"channels_last": "on"}, "torch"),
])
def test_auto_runs_onnx_runtime_on_the_cpu_in_fp32_only(options: dict[str, Any],
                                                        engine: str) -> None:
    """auto: ONNX Runtime for CPU fp32; torch for what only torch does."""
    assert choose_engine("auto", plan_for(torch.device("cpu"), **options)) == engine
    assert choose_engine("torch", plan_for(torch.device("cpu"), **options)) == "torch"


def test_auto_on_cuda_is_torch_and_onnx_runtime_there_is_refused() -> None:
    """This onnxruntime runs on the CPU: CUDA runs torch, and asking for both is refused."""
    plan = plan_for(torch.device("cuda"), "fp32", "off")
    assert choose_engine("auto", plan) == "torch"
    with pytest.raises(EngineUnavailable, match="LOOKALIKE_MODEL__ENGINE=torch"):
        choose_engine("onnxruntime", plan)


def test_a_network_the_exporter_cannot_take_runs_on_torch_under_auto(
    photos: list[Image.Image], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """auto falls back to torch, saying why; an explicit onnxruntime fails with the reason."""

    def refuse(net: torch.nn.Module, size: int) -> bytes:
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(engines, "export_onnx", refuse)
    with caplog.at_level(logging.WARNING, logger="lookalike.embedder"):
        fallback = Embedder(EmbedderConfig(threads=2, warmup=False))
        assert fallback.engine == "torch"
    assert "unsupported operator" in caplog.text
    assert fallback.embed_images(photos[:1]).shape == (1, fallback.dim)
    with pytest.raises(EngineUnavailable, match="unsupported operator"):
        Embedder(EmbedderConfig(engine="onnxruntime", warmup=False)).load()


def test_the_padding_computed_at_run_time_is_folded_into_the_convolutions() -> None:
    """efficientnet_lite0's "same" padding exports as Shape -> ... -> Pad chains; the exported
    graph has none left (each Conv pads itself) and gives the rows the unfolded graph gives."""
    import onnx
    import onnxruntime as ort

    net = Embedder(EmbedderConfig(engine="torch", warmup=False))
    net.load()
    folded = net.onnx_graph()
    ops = [node.op_type for node in onnx.load_from_string(folded).graph.node]
    assert ops.count("Pad") == ops.count("Shape") == 0

    def unfolded(graph: bytes, input_name: str, size: int) -> bytes:
        return graph

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engines, "fold_static_pads", unfolded)
        plain = net.onnx_graph()
    plain_ops = [node.op_type for node in onnx.load_from_string(plain).graph.node]
    assert plain_ops.count("Pad") > 0
    assert plain_ops.count("Conv") == ops.count("Conv")
    assert len(ops) < len(plain_ops) / 2
    batch = {"pixels": np.random.default_rng(0).standard_normal((2, 3, 224, 224),
                                                                 dtype=np.float32)}
    rows = [ort.InferenceSession(g, providers=["CPUExecutionProvider"]).run(None, batch)[0]
            for g in (plain, folded)]
    np.testing.assert_allclose(rows[1], rows[0], atol=1e-5)
