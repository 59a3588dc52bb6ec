"""Reads ride out a server's passing shard hand-offs; real refusals and writes do not wait."""

from __future__ import annotations

from typing import Any

import pytest
from pymilvus.exceptions import MilvusException

from lookalike.core.milvus.retrying import BACKOFF_S, RetryingReads, is_transient

HANDOFF = MilvusException(code=65535, message="failed to get delegator -1 for channel "
                          "by-dev-rootcoord-dml_5_470854779410720240v0: can not find client of node -1")


class Flaky:
    """A client whose calls fail with `error` `failures` times, then answer."""

    def __init__(self, error: Exception, failures: int) -> None:
        self.error = error
        self.failures = failures
        self.calls: list[str] = []

    def _answer(self, name: str) -> Any:
        self.calls.append(name)
        if len(self.calls) <= self.failures:
            raise self.error
        return [name]

    def search(self, *args: Any, **kwargs: Any) -> Any:
        return self._answer("search")

    def insert(self, *args: Any, **kwargs: Any) -> Any:
        return self._answer("insert")


def test_a_read_is_tried_again_through_a_shard_handoff() -> None:
    """A read refused by a passing shard hand-off is tried again after each backoff step."""
    pauses: list[float] = []
    client = Flaky(HANDOFF, failures=2)
    assert RetryingReads(client, pauses.append).search("images", data=[[1.0]]) == ["search"]
    assert client.calls == ["search"] * 3
    assert pauses == list(BACKOFF_S[:2])


def test_a_handoff_that_lasts_surfaces_after_the_backoff() -> None:
    """A hand-off that outlasts every backoff step surfaces as the refusal itself."""
    pauses: list[float] = []
    client = Flaky(HANDOFF, failures=100)
    with pytest.raises(MilvusException, match="failed to get delegator"):
        RetryingReads(client, pauses.append).search("images")
    assert len(client.calls) == len(BACKOFF_S) + 1
    assert pauses == list(BACKOFF_S)


@pytest.mark.parametrize(("method", "error"), [
    ("search", MilvusException(code=1100, message="cannot parse expression: label ==")),
    ("insert", HANDOFF),  # writes are never repeated here: the pipeline's retry decides
])
def test_real_refusals_and_writes_surface_at_once(method: str, error: Exception) -> None:
    """A real refusal of a read, and any refusal of a write, is not tried again here."""
    client = Flaky(error, failures=1)
    with pytest.raises(MilvusException):
        getattr(RetryingReads(client, lambda _: None), method)("images")
    assert client.calls == [method]


def test_transient_markers() -> None:
    """Hand-off refusals count as transient, other errors do not."""
    assert is_transient(HANDOFF)
    assert is_transient(RuntimeError("channel not available[channel=dml_0]"))
    assert not is_transient(MilvusException(code=100, message="collection not found[images]"))


class Recording:
    """A client that records the keyword arguments of each call."""

    def __init__(self) -> None:
        self.kwargs: dict[str, dict[str, Any]] = {}

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.kwargs[name] = kwargs
            return []

        return call


def test_reads_and_writes_give_up_after_the_timeout_unless_the_caller_names_one() -> None:
    """search, query, get, insert, upsert and delete get the settings' timeout; a caller's own
    timeout stands; other calls (load, flush: slow on purpose) get none."""
    client = Recording()
    reads = RetryingReads(client, timeout_s=3.0)
    for method in ("search", "query", "get", "insert", "upsert", "delete"):
        getattr(reads, method)("images")
        assert client.kwargs[method] == {"timeout": 3.0}, method
    reads.search("images", timeout=60.0)
    assert client.kwargs["search"] == {"timeout": 60.0}
    reads.load_collection("images")
    reads.flush("images")
    assert client.kwargs["load_collection"] == client.kwargs["flush"] == {}
    RetryingReads(client).query("images")
    assert client.kwargs["query"] == {}
