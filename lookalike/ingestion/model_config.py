"""Model settings as the embedder's config: the one mapping every place that builds an
embedder from settings goes through (the embedder itself reads no settings)."""

from __future__ import annotations

from pathlib import Path

from lookalike.core.settings import ModelSettings
from lookalike.embedder.runtime import EmbedderConfig
from lookalike.embedder.whitening import PCAWhitening


def embedder_config(model: ModelSettings, whitening: PCAWhitening | None = None,
                    cache_dir: Path | None = None) -> EmbedderConfig:
    """The config of the embedder `model` describes, `whitening` applied to its output; its
    exported ONNX graphs are kept under `cache_dir` (the settings' cache), when given."""
    return EmbedderConfig(
        backbone=model.backbone,
        weights=Path(model.weights) if model.weights else None,
        input_size=model.image_size,
        pooling=model.pooling,
        gem_p=model.gem_p,
        batch_size=model.batch_size,
        device=model.device,
        threads=model.threads,
        max_pixels=model.max_pixels,
        decode_px=model.decode_px,
        scales=tuple(model.scales),
        flip=model.flip,
        semantic_weight=model.semantic_weight,
        whitening=whitening,
        precision=model.precision,
        channels_last=model.channels_last,
        compile=model.compile,
        decoder=model.decoder,
        warmup=model.warmup,
        engine=model.engine,
        cache_dir=engine_cache(cache_dir),
        int8_model=Path(model.int8_model) if model.int8_model else None,
    )


def engine_cache(cache_dir: Path | None) -> Path | None:
    """Where the exported ONNX graphs live under a cache folder."""
    return cache_dir / "onnx" if cache_dir is not None else None
