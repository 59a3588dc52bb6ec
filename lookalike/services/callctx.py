"""Per-call values that the request interceptor sets and deeper layers read."""

from __future__ import annotations

from contextvars import ContextVar

# Monotonic time by which the current call must be answered; None: no deadline.
call_deadline: ContextVar[float | None] = ContextVar("call_deadline", default=None)
# Model forward time (ms) of the batch that served this thread's latest embedding call.
forward_ms: ContextVar[float | None] = ContextVar("forward_ms", default=None)
# Time (ms) that call waited in the batcher's queue before its batch started.
queue_ms: ContextVar[float] = ContextVar("queue_ms", default=0.0)
