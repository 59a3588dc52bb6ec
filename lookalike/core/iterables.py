"""Helpers over iterables that the batched stages share."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import TypeVar

T = TypeVar("T")


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """`items` in lists of `size` (the last one shorter), lazily: a source of millions of
    items is never held at once (itertools.batched is 3.12; this project runs on 3.11)."""
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk
