"""Typed errors of the API layer; the request interceptor maps each to its gRPC status code."""

from __future__ import annotations

from lookalike.core.errors import LookalikeError


class Unauthenticated(LookalikeError):
    """A call without a valid bearer token."""


class Overloaded(LookalikeError):
    """The server's bounded queue is full: the caller should back off and retry."""


class DeadlineExceeded(LookalikeError):
    """The caller's deadline passed before the work was done."""


class EmbedderUnavailable(LookalikeError):
    """The remote EmbedService cannot be reached or failed."""
