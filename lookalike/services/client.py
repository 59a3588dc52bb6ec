"""A typed client of the lookalike.v1 API; the UI and CLI reach the platform only through it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from numpy.typing import NDArray

from lookalike.services.gen.lookalike.v1 import lookalike_pb2 as pb
from lookalike.services.gen.lookalike.v1 import lookalike_pb2_grpc as pb_grpc


class ClientError(Exception):
    """A call that failed, with the gRPC status and the server's explanation."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    @property
    def unreachable(self) -> bool:
        """Whether the server could not be reached at all."""
        return bool(self.code == grpc.StatusCode.UNAVAILABLE)


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result."""

    id: int
    score: float
    label: str
    source: str
    sha256: str
    width: int
    height: int
    tags: tuple[str, ...]
    thumbnail: bytes
    thumbnail_url: str
    image_url: str


@dataclass(frozen=True, slots=True)
class SearchResponse:
    """Hits best first and the server-side time."""

    hits: list[Hit]
    took_ms: float
    collection: str


@dataclass(frozen=True, slots=True)
class EmbedResult:
    """One image's embedding, or why it has none."""

    vector: NDArray[np.float32] | None
    error: str = ""


class LookalikeClient:
    """Blocking client; use as a context manager or call `close()`."""

    def __init__(self, address: str, timeout_s: float = 30.0, max_message_mb: int = 32) -> None:
        max_bytes = max_message_mb * 1024 * 1024
        self._channel = grpc.insecure_channel(
            address,
            options=[
                ("grpc.max_receive_message_length", max_bytes),
                ("grpc.max_send_message_length", max_bytes),
                # Reconnect quickly once a server that was down comes back.
                ("grpc.initial_reconnect_backoff_ms", 200),
                ("grpc.min_reconnect_backoff_ms", 200),
                ("grpc.max_reconnect_backoff_ms", 2000),
            ],
        )
        self.address = address
        self.timeout_s = timeout_s
        self._search = pb_grpc.SearchServiceStub(self._channel)
        self._embed = pb_grpc.EmbedServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def __enter__(self) -> LookalikeClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def search(
        self,
        *,
        image: bytes | None = None,
        image_id: int | None = None,
        top_k: int = 10,
        filter_expr: str = "",
        include_thumbnails: bool = False,
        ids_only: bool = False,
    ) -> SearchResponse:
        """Images most like `image` (encoded bytes) or like the stored image `image_id`.

        With `ids_only`, hits carry only id and score (the cheap way to get deep rankings).
        """
        if (image is None) == (image_id is None):
            raise ValueError("pass exactly one of image, image_id")
        request = pb.SearchRequest(
            top_k=top_k, filter=filter_expr, include_thumbnails=include_thumbnails,
            ids_only=ids_only,
        )
        if image is not None:
            request.image = image
        else:
            assert image_id is not None
            request.id = image_id
        try:
            response = self._search.Search(request, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise ClientError(exc.code(), exc.details() or "") from None
        return SearchResponse(
            hits=[
                Hit(id=h.id, score=h.score, label=h.label, source=h.source, sha256=h.sha256,
                    width=h.width, height=h.height, tags=tuple(h.tags), thumbnail=h.thumbnail,
                    thumbnail_url=h.thumbnail_url, image_url=h.image_url)
                for h in response.hits
            ],
            took_ms=response.took_ms,
            collection=response.collection,
        )

    def embed(self, images: Sequence[bytes]) -> list[EmbedResult]:
        """One embedding or error per encoded image, in order."""
        try:
            response = self._embed.Embed(pb.EmbedRequest(images=list(images)), timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise ClientError(exc.code(), exc.details() or "") from None
        return [
            EmbedResult(vector=np.asarray(r.embedding.values, dtype=np.float32))
            if r.WhichOneof("result") == "embedding"
            else EmbedResult(vector=None, error=f"{r.error.code}: {r.error.message}")
            for r in response.results
        ]

    def healthy(self, service: str = "") -> bool:
        """Whether the server reports SERVING for `service` ("" = the whole server)."""
        try:
            response = self._health.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=self.timeout_s
            )
        except grpc.RpcError:
            return False
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


def client_settings_from_env() -> tuple[str, float]:
    """(address, timeout) from the environment, for a client process's own composition root."""
    from lookalike.core.settings import Settings

    client = Settings().client
    return client.address, client.timeout_s
