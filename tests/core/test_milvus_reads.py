"""Reads ride out a server's passing shard hand-offs; real refusals and writes do not wait."""

from __future__ import annotations

from typing import Any

import pytest
from pymilvus.exceptions import MilvusException

from lookalike.core.milvus_reads import BACKOFF_S, RetryingReads, is_transient

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
    pauses: list[float] = []
    client = Flaky(HANDOFF, failures=2)
    assert RetryingReads(client, pauses.append).search("images", data=[[1.0]]) == ["search"]
    assert client.calls == ["search"] * 3
    assert pauses == list(BACKOFF_S[:2])


def test_a_handoff_that_lasts_surfaces_after_the_backoff() -> None:
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
    client = Flaky(error, failures=1)
    with pytest.raises(MilvusException):
        getattr(RetryingReads(client, lambda _: None), method)("images")
    assert client.calls == [method]


def test_transient_markers() -> None:
    assert is_transient(HANDOFF)
    assert is_transient(RuntimeError("channel not available[channel=dml_0]"))
    assert not is_transient(MilvusException(code=100, message="collection not found[images]"))
