"""Cross-cutting server concerns: typed errors -> gRPC status codes, one log line per request."""

from __future__ import annotations

import json
import logging
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

log = logging.getLogger("lookalike.requests")
request_id: ContextVar[str] = ContextVar("request_id", default="-")


def status_for(exc: BaseException) -> grpc.StatusCode:
    """The gRPC status code that tells a client what went wrong."""
    match exc:
        case InvalidArgument() | ImageError():
            return grpc.StatusCode.INVALID_ARGUMENT
        case NotFound():
            return grpc.StatusCode.NOT_FOUND
        case StoreUnavailable():
            return grpc.StatusCode.UNAVAILABLE
        case ModelSpecMismatch() | ConfigError() | EmbedderError():
            return grpc.StatusCode.FAILED_PRECONDITION
        case LookalikeError():
            return grpc.StatusCode.INTERNAL
    return grpc.StatusCode.INTERNAL


class ErrorMappingInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Maps typed errors to status codes and logs one structured line per request."""

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: Any
    ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = str(handler_call_details.method)
        behaviour = handler.unary_unary

        def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
            rid = dict(context.invocation_metadata()).get("x-request-id") or uuid.uuid4().hex
            token = request_id.set(str(rid))
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                return behaviour(request, context)
            except (LookalikeError, EmbedderError) as exc:
                code = status_for(exc)
                context.abort(code, str(exc))
            except Exception:
                code = grpc.StatusCode.INTERNAL
                log.exception("unhandled error in %s (request %s)", method, rid)
                context.abort(code, f"internal error (request id {rid})")
            finally:
                log.info(json.dumps({
                    "request_id": rid, "method": method, "code": code.name,
                    "ms": round((time.perf_counter() - started) * 1000.0, 2),
                }))
                request_id.reset(token)

        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
