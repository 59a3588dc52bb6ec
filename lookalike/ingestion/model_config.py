"""Model settings as the embedder's config: the one mapping every place that builds an
embedder from settings goes through (the embedder itself reads no settings)."""

from __future__ import annotations

from pathlib import Path

from lookalike.core.settings import ModelSettings
from lookalike.embedder.runtime import EmbedderConfig
from lookalike.embedder.whitening import PCAWhitening


def embedder_config(model: ModelSettings, whitening: PCAWhitening | None = None) -> EmbedderConfig:
    """The config of the embedder `model` describes, `whitening` applied to its output."""
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
    )
