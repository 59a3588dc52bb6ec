"""A QueryEmbedder backed by a remote EmbedService (the GPU deployment), through the client."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from lookalike.core.errors import ModelSpecMismatch
from lookalike.embedder.errors import ImageDecodeError, ImageError, ImageTooLarge
from lookalike.embedder.runtime import EmbedOutcome
from lookalike.embedder.spec import EmbedderSpec
from lookalike.services.client import ClientError, LookalikeClient
from lookalike.services.errors import EmbedderUnavailable


def _item_error(text: str) -> ImageError:
    code, _, message = text.partition(": ")
    return ImageTooLarge(message) if code == "too_large" else ImageDecodeError(message or text)


class RemoteEmbedder:
    """Embeds through `EmbedService.Embed` on another server.

    Its spec is learnt from the first answer; an answer from another model later is refused
    (ModelSpecMismatch), so that a redeployed embedder never feeds the collection's searches.
    """

    def __init__(self, client: LookalikeClient) -> None:
        self._client = client
        self._spec: EmbedderSpec | None = None
        self._lock = threading.Lock()

    @property
    def spec(self) -> EmbedderSpec:
        """The remote model's spec (one empty Embed call the first time)."""
        with self._lock:
            if self._spec is None:
                self._embed([])
            assert self._spec is not None
            return self._spec

    def embed_bytes(self, blobs: Sequence[bytes]) -> list[EmbedOutcome]:
        """One outcome per encoded image, in order."""
        return self._embed(blobs)

    def _embed(self, blobs: Sequence[bytes]) -> list[EmbedOutcome]:
        try:
            response = self._client.embed_with_model(blobs)
        except ClientError as exc:
            raise EmbedderUnavailable(
                f"remote EmbedService at {self._client.address} failed: {exc}"
            ) from None
        spec = response.model
        if self._spec is not None and spec != self._spec:
            # The collection was opened for the first spec: vectors of another model must not
            # be compared with it.
            raise ModelSpecMismatch(
                f"remote EmbedService at {self._client.address} now serves another model "
                f"({spec.to_dict()}) than the one this server started with "
                f"({self._spec.to_dict()}); restart the server against the right collection"
            )
        self._spec = spec
        return [
            EmbedOutcome(vector=np.asarray(r.vector, dtype=np.float32), category=r.category)
            if r.vector is not None
            else EmbedOutcome(error=_item_error(r.error))
            for r in response.results
        ]

    def healthy(self) -> bool:
        """Whether the remote server reports its EmbedService SERVING."""
        return self._client.healthy("lookalike.v1.EmbedService")

    def close(self) -> None:
        """Close the channel."""
        self._client.close()
