"""Reaching Milvus: a client for a URI, and the handle on a served collection that the store's
parts share."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lookalike.core.errors import StoreUnavailable
from lookalike.core.milvus.retrying import RetryingReads
from lookalike.core.settings import MilvusSettings


class _WithoutRpcErrorTracebacks(logging.Filter):
    """Drops pymilvus's ERROR record (message and full traceback) for each failed call.

    The stores turn a failed Milvus call into a typed error, which the CLI prints in one line
    and the server logs once per request with its status and message (an exception that is not
    mapped still reaches their handlers, traceback and all); pymilvus's record would print the
    same failure again, as a traceback, before either. Its retry warnings still pass.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


_RPC_ERROR_FILTER = _WithoutRpcErrorTracebacks()


def connect_milvus(uri: str, settings: MilvusSettings) -> Any:
    """A MilvusClient for `uri`, with a clear error when it cannot be opened."""
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    if "://" not in uri:
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
    # Milvus Lite (and a 2.3 server) return no MVCC timestamp, so every query_iterator would log a
    # warning that it falls back to client-side ones: expected, and noise on the console.
    logging.getLogger("pymilvus.client.iterator.query_iterator").setLevel(logging.ERROR)
    # Adding the same filter object again is a no-op.
    logging.getLogger("pymilvus.decorators").addFilter(_RPC_ERROR_FILTER)
    try:
        return MilvusClient(
            uri=uri, token=settings.token.get_secret_value(), timeout=settings.timeout_s
        )
    except MilvusException as exc:
        hint = (
            " (Milvus Lite allows one process per data file: is `lookalike serve` running on it?"
            " Stop it, or point LOOKALIKE_MILVUS__URI at a Milvus server.)"
            if "://" not in uri else ""
        )
        raise StoreUnavailable(f"cannot open Milvus at {uri}: {exc.message}{hint}") from exc


@dataclass(frozen=True, slots=True)
class Served:
    """One collection as a store serves it: the client that reaches it, its public name (the
    alias) and the settings it searches with.

    `client` is a pymilvus MilvusClient (untyped there), wrapped by `served_by` so that reads ride
    out shard hand-offs and every read and write is bounded by the settings' timeout.
    """

    client: Any
    name: str
    settings: MilvusSettings


def served_by(client: Any, name: str, settings: MilvusSettings) -> Served:
    """The handle on collection `name` reached through `client`."""
    # Searches keep answering while a server hands a shard over (a re-index loading the new
    # collection beside the served one): reads ride out those refusals.
    wrapped = (client if isinstance(client, RetryingReads)
               else RetryingReads(client, timeout_s=settings.timeout_s))
    return Served(wrapped, name, settings)
