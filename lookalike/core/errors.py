"""Typed errors raised by library code; entry points map them to exit codes or gRPC statuses."""

from __future__ import annotations


class LookalikeError(Exception):
    """Base of every error the platform raises on purpose."""


class ConfigError(LookalikeError):
    """A setting is missing or has a value that cannot work."""


class InvalidArgument(LookalikeError):
    """A request argument is out of range or malformed."""


class InvalidFilter(InvalidArgument):
    """A filter expression the vector store refused."""


class NotFound(LookalikeError):
    """A stored item, blob or collection does not exist."""


class StoreUnavailable(LookalikeError):
    """The vector store or blob store cannot be reached or opened."""


class ModelSpecMismatch(LookalikeError):
    """A collection was built with another model than the one configured."""
