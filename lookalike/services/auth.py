"""Bearer-token authentication for every lookalike.v1 call; health and reflection stay open."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from lookalike.services.errors import Unauthenticated

# Load balancers and orchestrators probe health without credentials; reflection only describes
# the (public) proto. Both are the only streaming services: the API itself is unary.
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class AuthInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Refuses unary calls without `authorization: Bearer <token>` naming one of the tokens."""

    def __init__(self, tokens: Sequence[str]) -> None:
        self._tokens = [t.encode() for t in tokens if t]

    def _valid(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        # Compare against every token, so the time taken does not tell which one nearly matched.
        matches = [hmac.compare_digest(token.strip().encode(), t) for t in self._tokens]
        return any(matches)

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: Any
    ) -> Any:
        handler = continuation(handler_call_details)
        method = str(handler_call_details.method)
        if handler is None or handler.unary_unary is None or method.startswith(OPEN_PREFIXES):
            return handler
        header = dict(handler_call_details.invocation_metadata or ()).get("authorization", "")
        if self._valid(str(header)):
            return handler

        def refuse(request: Any, context: grpc.ServicerContext) -> Any:
            raise Unauthenticated(
                "missing bearer token" if not header else "invalid bearer token"
            )

        return grpc.unary_unary_rpc_method_handler(
            refuse,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
