"""Reads that ride out a Milvus server's passing shard hand-offs.

While a server loads a collection, moves a channel or re-registers a query node, a read can be
refused for a moment with "failed to get delegator ... for channel" or "channel not available"
(seen on Milvus 2.3 while a re-index built and loaded a second collection beside the served
one). Searches must keep answering through that, so reads are tried again a few times with a
short backoff; every other error, and every write, surfaces at once.

Every read and write is also bounded by the settings' timeout (MilvusClient's own `timeout`
bounds only connecting): a server that has just restarted answers its health endpoint some
25 s before it serves reads again (Milvus 2.3.5), and calls made meanwhile would hang until it
does instead of failing, to be retried or answered UNAVAILABLE.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

# Reads: they change nothing, so trying one again is always safe.
READ_METHODS = frozenset({"search", "query", "get"})
# The data path: each call gives up after the timeout, unless its caller names another.
BOUNDED_METHODS = READ_METHODS | {"insert", "upsert", "delete"}
TRANSIENT_MARKERS = (
    "failed to get delegator", "channel not available", "no available shard delegator",
    "shard leader", "not found in current target",
)
BACKOFF_S = (0.25, 0.5, 1.0, 2.0)


def is_transient(exc: BaseException) -> bool:
    """Whether a Milvus error is a passing shard hand-off rather than a real refusal."""
    text = str(exc).lower()
    return any(marker in text for marker in TRANSIENT_MARKERS)


def retrying(call: Callable[..., Any], sleep: Callable[[float], None] = time.sleep
             ) -> Callable[..., Any]:
    """`call`, tried again after each BACKOFF_S pause while it fails transiently."""

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        for pause in BACKOFF_S:
            try:
                return call(*args, **kwargs)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                sleep(pause)
        return call(*args, **kwargs)

    return wrapped


def bounded(call: Callable[..., Any], timeout_s: float) -> Callable[..., Any]:
    """`call`, given `timeout_s` as its timeout unless the caller names one."""

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", timeout_s)
        return call(*args, **kwargs)

    return wrapped


class RetryingReads:
    """A MilvusClient whose reads ride out transient refusals and whose reads and writes give up
    after `timeout_s` (None: never); everything else passes through."""

    def __init__(self, client: Any, sleep: Callable[[float], None] = time.sleep,
                 timeout_s: float | None = None) -> None:
        self._inner = client
        self._sleep = sleep
        self._timeout_s = timeout_s

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name in BOUNDED_METHODS and self._timeout_s is not None:
            attribute = bounded(attribute, self._timeout_s)
        if name in READ_METHODS:
            return retrying(attribute, self._sleep)
        return attribute
