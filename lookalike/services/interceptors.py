"""Cross-cutting server concerns: typed errors -> gRPC status codes, deadlines, metrics, and one
structured log line per request with its request id."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import grpc

from lookalike.core.errors import (
    ConfigError,
    InvalidArgument,
    LookalikeError,
    ModelSpecMismatch,
    NotFound,
    StoreUnavailable,
)
from lookalike.embedder.errors import EmbedderError, ImageError
from lookalike.services.callctx import call_deadline
from lookalike.services.errors import (
    DeadlineExceeded,
    EmbedderUnavailable,
    Overloaded,
    Unauthenticated,
)
from lookalike.services.metrics import ServerMetrics

log = logging.getLogger("lookalike.requests")
request_id: ContextVar[str] = ContextVar("request_id", default="-")
REQUEST_ID_KEY = "x-request-id"
# A client's own request id is kept only when it is this short and plain: it is logged and echoed
# on every call, so anything longer or stranger is replaced by one of ours.
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# An error message can quote the request (a filter expression): the log line keeps its start.
_LOGGED_ERROR_CHARS = 1000
# Deadlines further away than this are treated as none (gRPC reports "no deadline" as huge).
_NO_DEADLINE_S = 1e7


def request_id_for(sent: str | bytes | None) -> tuple[str, bool]:
    """The id to log and echo for a call whose client sent `sent` as its request id, and whether
    the client's id was replaced (it sent one that is too long or not [A-Za-z0-9._:-])."""
    if isinstance(sent, str) and _CLIENT_REQUEST_ID.fullmatch(sent):
        return sent, False
    return uuid.uuid4().hex, bool(sent)


def status_for(exc: BaseException) -> grpc.StatusCode:
    """The gRPC status code that tells a client what went wrong."""
    match exc:
        case InvalidArgument() | ImageError():
            return grpc.StatusCode.INVALID_ARGUMENT
        case NotFound():
            return grpc.StatusCode.NOT_FOUND
        case StoreUnavailable() | EmbedderUnavailable():
            return grpc.StatusCode.UNAVAILABLE
        case Unauthenticated():
            return grpc.StatusCode.UNAUTHENTICATED
        case Overloaded():
            return grpc.StatusCode.RESOURCE_EXHAUSTED
        case DeadlineExceeded():
            return grpc.StatusCode.DEADLINE_EXCEEDED
        case ModelSpecMismatch() | ConfigError() | EmbedderError():
            return grpc.StatusCode.FAILED_PRECONDITION
        case LookalikeError():
            return grpc.StatusCode.INTERNAL
    return grpc.StatusCode.INTERNAL


class ErrorMappingInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Maps typed errors to status codes, sets the call's deadline for deeper layers, counts
    and times each call, and logs one structured line per request."""

    def __init__(self, metrics: ServerMetrics | None = None) -> None:
        self._metrics = metrics

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: Any
    ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = str(handler_call_details.method)
        behaviour = handler.unary_unary
        metrics = self._metrics

        def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
            rid, replaced = request_id_for(dict(context.invocation_metadata()).get(REQUEST_ID_KEY))
            token = request_id.set(rid)
            remaining = context.time_remaining()
            deadline_token = call_deadline.set(
                None if remaining is None or remaining > _NO_DEADLINE_S
                else time.monotonic() + remaining
            )
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            error = ""
            # Clients tell a server that answered with an error from one they could not reach
            # by this, and quote it when they report the failure.
            context.set_trailing_metadata(((REQUEST_ID_KEY, rid),))
            try:
                return behaviour(request, context)
            except (LookalikeError, EmbedderError) as exc:
                code = status_for(exc)
                error = str(exc)
                context.abort(code, error)
            except Exception as exc:
                code = grpc.StatusCode.INTERNAL
                error = f"{type(exc).__name__}: {exc}"
                log.exception("unhandled error in %s (request %s)", method, rid)
                context.abort(code, f"internal error (request id {rid})")
            finally:
                seconds = time.perf_counter() - started
                if metrics is not None:
                    metrics.observe_call(method, code.name, seconds)
                log.info(json.dumps({
                    "request_id": rid, "method": method, "code": code.name,
                    "ms": round(seconds * 1000.0, 2), "peer": context.peer(),
                    "request_bytes": request.ByteSize() if hasattr(request, "ByteSize") else 0,
                    **({"error": error[:_LOGGED_ERROR_CHARS]} if error else {}),
                    **({"client_request_id_replaced": True} if replaced else {}),
                }))
                call_deadline.reset(deadline_token)
                request_id.reset(token)

        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
