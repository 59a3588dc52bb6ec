"""Capped exponential backoff for writes to stores that may stop answering for a while."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from lookalike.core.errors import StoreUnavailable
from lookalike.core.schemas import ImageRecord
from lookalike.core.vector_store import VectorStore

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Wait `initial_s`, doubling up to `max_s`, until `deadline_s` has passed since the first try."""

    initial_s: float = 0.2
    max_s: float = 5.0
    deadline_s: float = 300.0

    def delays(self) -> list[float]:
        """The waits between tries, in order, until the deadline (for documentation and tests)."""
        out: list[float] = []
        wait, total = self.initial_s, 0.0
        while total + wait <= self.deadline_s:
            out.append(wait)
            total += wait
            wait = min(wait * 2, self.max_s)
        return out


def with_retry(
    call: Callable[[], T],
    what: str,
    policy: RetryPolicy,
    on_retry: Callable[[StoreUnavailable], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """`call()`, retried on StoreUnavailable with capped exponential backoff.

    Raises the last StoreUnavailable, naming `what` and how long it was tried, once the
    deadline has passed.
    """
    started = time.monotonic()
    wait = policy.initial_s
    while True:
        try:
            return call()
        except StoreUnavailable as exc:
            elapsed = time.monotonic() - started
            if elapsed + wait > policy.deadline_s:
                raise StoreUnavailable(
                    f"{what} still failing after {elapsed:.0f} s of retries: {exc}"
                ) from exc
            log.warning("%s failed, retrying in %.1f s: %s", what, wait, exc)
            if on_retry is not None:
                on_retry(exc)
            sleep(wait)
            wait = min(wait * 2, policy.max_s)


def idempotent_insert(store: VectorStore, records: Sequence[ImageRecord]) -> Callable[[], None]:
    """An insert of `records` that can be retried: a retry first asks which ids landed, so none
    is stored twice."""
    attempt = 0

    def insert() -> None:
        nonlocal attempt
        attempt += 1
        todo = records
        if attempt > 1:
            landed = store.existing_ids([r.meta.id for r in records])
            todo = [r for r in records if r.meta.id not in landed]
        store.insert(todo)

    return insert
