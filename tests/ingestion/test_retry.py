"""Capped exponential backoff for store writes."""

from __future__ import annotations

import pytest

from lookalike.core.errors import StoreUnavailable
from lookalike.ingestion.retry import RetryPolicy, with_retry


def test_backoff_doubles_up_to_the_cap() -> None:
    """Waits double from the initial one and stop growing at the cap, within the deadline."""
    assert RetryPolicy(initial_s=0.5, max_s=3.0, deadline_s=12.0).delays() == [
        0.5, 1.0, 2.0, 3.0, 3.0,
    ]


def test_a_store_that_comes_back_is_retried_until_it_answers() -> None:
    """Failures are retried with the policy's waits; the call's result is returned."""
    waits: list[float] = []
    failures = iter([StoreUnavailable("down"), StoreUnavailable("still down")])

    def call() -> str:
        if (failure := next(failures, None)) is not None:
            raise failure
        return "stored"

    policy = RetryPolicy(initial_s=0.1, max_s=0.15, deadline_s=10)
    assert with_retry(call, "put", policy, sleep=waits.append) == "stored"
    assert waits == [0.1, 0.15]


def test_a_store_that_stays_down_fails_after_the_deadline() -> None:
    """Past the deadline the last error is raised, naming what was tried."""

    def call() -> None:
        raise StoreUnavailable("connection refused")

    with pytest.raises(StoreUnavailable, match=r"blob put of k still failing .*connection refused"):
        with_retry(call, "blob put of k", RetryPolicy(0.01, 0.02, 0.1))


def test_other_errors_are_not_retried() -> None:
    """Only StoreUnavailable is a reason to wait and try again."""
    calls = []

    def call() -> None:
        calls.append(1)
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError, match="a bug"):
        with_retry(call, "x", RetryPolicy(0.01, 0.02, 1.0))
    assert calls == [1]
