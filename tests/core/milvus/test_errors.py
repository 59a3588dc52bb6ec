"""Every failure of a Milvus call comes out as one typed error, with the filter blamed only
when the server refused it."""

from __future__ import annotations

import pytest
from pymilvus.exceptions import MilvusException

from lookalike.core.errors import ConfigError, InvalidFilter, StoreUnavailable
from lookalike.core.milvus.errors import call_failed, milvus_errors

REFUSAL = MilvusException(code=1100, message="cannot parse expression: label = = 3")


def test_any_failure_is_store_unavailable_with_the_cause() -> None:
    """A failed call reads "<what> failed: <error>" and keeps the original as its cause."""
    cause = ConnectionError("connection refused")
    with pytest.raises(StoreUnavailable, match=r"^Milvus insert on 'images' failed: connection"
                       ) as raised, milvus_errors(call_failed("insert", "images")):
        raise cause
    assert raised.value.__cause__ is cause


def test_a_refused_filter_is_the_callers_error() -> None:
    """With a filter, a server refusal blames it; without one, or when the server could not
    answer at all, the store is unavailable and told by the refusal's message alone."""
    with pytest.raises(InvalidFilter, match="filter 'label = = 3' was refused: cannot parse"), \
            milvus_errors("search in 'images' failed", filter_expr="label = = 3"):
        raise REFUSAL
    with pytest.raises(StoreUnavailable, match=r"^search in 'images' failed: cannot parse"), \
            milvus_errors("search in 'images' failed", filter_expr=""):
        raise REFUSAL
    unloaded = MilvusException(code=101, message="collection not loaded[images]")
    with pytest.raises(StoreUnavailable, match="collection not loaded"), \
            milvus_errors("search in 'images' failed", filter_expr="label == 'a'"):
        raise unloaded


def test_our_own_errors_pass_through() -> None:
    """A typed error raised inside the block already says what went wrong: it is not wrapped."""
    with pytest.raises(ConfigError, match=r"^collection 'x' does not exist$"), \
            milvus_errors("cannot open collection 'x'"):
        raise ConfigError("collection 'x' does not exist")
    with milvus_errors("nothing failed"):
        pass
