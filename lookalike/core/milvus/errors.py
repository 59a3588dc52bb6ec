"""One mapping from whatever a Milvus call raises to our typed errors.

Every call to a client sits inside `milvus_errors`: a refusal becomes StoreUnavailable, or
InvalidFilter where a filter was given and the server blamed it; our own typed errors raised in
the block already say what went wrong and pass through unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType

from lookalike.core.errors import InvalidFilter, LookalikeError, StoreUnavailable

# Refusals that are never the filter's fault: pymilvus could not reach the server, or the
# server has not loaded the collection yet (it reloads what it served after a restart).
_UNAVAILABLE_MARKERS = ("fail connecting to server", "collection not loaded")


def refused(message: str, filter_expr: str, failed: str) -> InvalidFilter | StoreUnavailable:
    """The typed error for a Milvus refusal: the filter's fault when there is one (unless the
    store could not answer at all), else the store's, told as `failed: message`."""
    if filter_expr.strip() and not any(m in message.lower() for m in _UNAVAILABLE_MARKERS):
        return InvalidFilter(f"filter {filter_expr!r} was refused: {message}")
    return StoreUnavailable(f"{failed}: {message}")


def call_failed(method: str, name: str) -> str:
    """How a failed client call for the store `name` is told."""
    return f"Milvus {method} on {name!r} failed"


def companion_failed(action: str, name: str) -> str:
    """How a failed write or search of a companion collection of the store `name` is told."""
    return f"Milvus {action} of {name!r} failed"


@dataclass(frozen=True, slots=True)
class MilvusErrors:
    """The context manager `milvus_errors` returns; it never swallows an error."""

    failed: str
    filter_expr: str | None = None

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if exc is None or isinstance(exc, LookalikeError) or not isinstance(exc, Exception):
            return
        if self.filter_expr is not None:
            from pymilvus.exceptions import MilvusException

            if isinstance(exc, MilvusException):
                raise refused(exc.message, self.filter_expr, self.failed) from exc
        raise StoreUnavailable(f"{self.failed}: {exc}") from exc


def milvus_errors(failed: str, *, filter_expr: str | None = None) -> MilvusErrors:
    """Raise what the block raises as StoreUnavailable(f"{failed}: {error}").

    With `filter_expr` (even ""), a refusal by the server (MilvusException) is told by its
    message alone, and blamed on the filter where there is one (see `refused`).
    """
    return MilvusErrors(failed, filter_expr)
