"""Typed errors of the embedder (it imports nothing from the rest of the repository)."""

from __future__ import annotations


class EmbedderError(Exception):
    """Base of every error the embedder raises on purpose."""


class UnknownBackbone(EmbedderError):
    """A backbone name the registry does not know."""


class WeightsUnavailable(EmbedderError):
    """Weights that cannot be found or loaded."""


class ImageError(EmbedderError):
    """An input that is not a usable image."""


class ImageDecodeError(ImageError):
    """Bytes that do not decode as an image."""


class ImageTooLarge(ImageError):
    """An image over the configured pixel limit."""
