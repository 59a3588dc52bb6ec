"""A byte budget for the request payloads a server holds at once, and memory handed back to the
operating system once a burst of them is over.

gRPC bounds each message (server.max_message_mb) and the calls in progress
(server.max_concurrent_rpcs), but not their product: 64 concurrent 31 MB uploads took a server
from about 1 GB to 3.2 GB of RSS. The budget is taken from a call's raw bytes before they are
parsed (the parsed copy, and the decoded pixels after it, are never made for a call over the
budget), and given back when the call ends. glibc keeps memory that a burst freed in its heaps;
`malloc_trim` returns it once the payloads in flight fall back to none.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

import grpc

from lookalike.services.errors import Overloaded

log = logging.getLogger("lookalike.server")
MB = 1024 * 1024
# Payload bytes that must have come and gone since the last trim for an idle moment to trim:
# a trim walks every heap, which small traffic does not need.
TRIM_AFTER_BYTES = 64 * MB


def _malloc_trim() -> Callable[[], None] | None:
    """glibc's malloc_trim(0), or None where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def release_free_memory() -> None:
        trim(0)

    return release_free_memory


class MemoryReturner:
    """Hands freed heap memory back to the operating system, in a background thread, when
    asked (so the call that ends a burst does not wait for it)."""

    def __init__(self, trim: Callable[[], None] | None = None) -> None:
        self._trim = trim if trim is not None else _malloc_trim()
        self._wanted = threading.Event()
        self._stopped = False
        self.trims = 0
        self._thread = threading.Thread(target=self._run, name="memory-returner", daemon=True)
        if self._trim is not None:
            self._thread.start()

    def request(self) -> None:
        """Trim soon (several requests before it runs make one trim)."""
        self._wanted.set()

    def stop(self) -> None:
        """Stop the background thread."""
        self._stopped = True
        self._wanted.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        assert self._trim is not None
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self._stopped:
                return
            self._trim()
            self.trims += 1


class ByteBudget:
    """At most `limit` bytes held at once; thread-safe. `on_idle` is called when the bytes held
    fall back to none after at least `trim_after` bytes came and went since the last call."""

    def __init__(self, limit: int, on_idle: Callable[[], None] | None = None,
                 trim_after: int = TRIM_AFTER_BYTES) -> None:
        self.limit = limit
        self._on_idle = on_idle
        self._trim_after = trim_after
        self._lock = threading.Lock()
        self.held = 0
        self._since_idle = 0

    def take(self, size: int) -> bool:
        """Hold `size` more bytes if the budget has room; whether it had."""
        with self._lock:
            if self.held + size > self.limit:
                return False
            self.held += size
            self._since_idle += size
            return True

    def give_back(self, size: int) -> None:
        """Release `size` bytes taken earlier."""
        with self._lock:
            self.held -= size
            idle = self.held == 0 and self._since_idle >= self._trim_after
            if idle:
                self._since_idle = 0
        if idle and self._on_idle is not None:
            self._on_idle()


class _Held:
    """A parsed request and its share of the budget, given back once (when the call ends, or
    when the request is dropped unanswered)."""

    def __init__(self, message: Any, size: int, budget: ByteBudget) -> None:
        self.message = message
        self.size = size
        self._release = weakref.finalize(self, budget.give_back, size)

    def release(self) -> None:
        self._release()

    def ByteSize(self) -> int:  # noqa: N802 (read by the request log like a message's)
        """The raw request's size."""
        return self.size


class _OverBudget:
    """A request left unparsed: it did not fit in the budget."""

    def __init__(self, size: int, held: int) -> None:
        self.size = size
        self.held = held

    def ByteSize(self) -> int:  # noqa: N802
        """The raw request's size."""
        return self.size


class PayloadBudgetInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Takes each unary call's request bytes from `budget` before they are parsed and gives
    them back when the call ends; a call that does not fit is Overloaded (RESOURCE_EXHAUSTED)
    at once. `setting` names the budget's setting in that message."""

    def __init__(self, budget: ByteBudget, setting: str) -> None:
        self._budget = budget
        self._setting = setting

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: Any
    ) -> Any:
        handler = continuation(handler_call_details)
        # Streaming calls (none today) and unknown methods pass as they are.
        behaviour = handler.unary_unary if handler is not None else None
        if behaviour is None:
            return handler
        parse = handler.request_deserializer
        budget = self._budget

        def deserialize(raw: bytes) -> _Held | _OverBudget:
            if not budget.take(len(raw)):
                return _OverBudget(len(raw), budget.held)
            try:
                return _Held(parse(raw) if parse is not None else raw, len(raw), budget)
            except BaseException:
                budget.give_back(len(raw))
                raise

        def wrapped(request: _Held | _OverBudget, context: grpc.ServicerContext) -> Any:
            if isinstance(request, _OverBudget):
                raise Overloaded(
                    f"this {request.size / MB:.1f} MB request does not fit in the server's "
                    f"budget of {budget.limit / MB:.0f} MB of requests in progress "
                    f"({request.held / MB:.0f} MB held; {self._setting}): retry shortly")
            try:
                return behaviour(request.message, context)
            finally:
                request.release()

        return grpc.unary_unary_rpc_method_handler(
            wrapped, request_deserializer=deserialize,
            response_serializer=handler.response_serializer)
