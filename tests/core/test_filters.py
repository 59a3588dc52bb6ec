"""Filter expressions from plain values, run against real Milvus Lite."""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import pytest

from lookalike.core.errors import InvalidArgument
from lookalike.core.filters import build_filter, to_unix
from lookalike.core.schemas import ImageMeta, ImageRecord
from lookalike.core.settings import MilvusSettings
from lookalike.core.vector_store import MilvusVectorStore


def test_expression_text() -> None:
    assert build_filter() == ""
    assert build_filter(labels=["beach", 'say "hi"'], tags=["a"], since="2026-01-02",
                        until=date(2026, 1, 3), expression="width > 10") == (
        'label in ["beach", "say \\"hi\\""] and ARRAY_CONTAINS(tags, "a") and '
        "ingested_at >= 1767312000 and ingested_at < 1767398400 and (width > 10)"
    )
    assert to_unix("1767312000") == 1767312000
    assert to_unix("2026-01-02T01:00:00+01:00") == 1767312000
    with pytest.raises(InvalidArgument, match="is not a date"):
        to_unix("yesterday")


def test_filters_select_what_they_say(client: Any) -> None:
    store = MilvusVectorStore.open(client, "filters", {"dim": 4}, 4, MilvusSettings())
    rng = np.random.default_rng(0)
    rows = [("s3://b/beach/1.jpg", "beach", ("sunny",), 100), ("s3://b/beach_2/2.jpg", "beach",
            ("rainy",), 200), ("/photos/100%/3.jpg", "city", ("sunny", "night"), 300)]
    store.insert([
        ImageRecord(ImageMeta(id=i + 1, sha256=f"{i:064x}", blob_key="k", source=source,
                              label=label, tags=tags, meta={}, width=1, height=1, ingested_at=at),
                    rng.normal(size=4).astype(np.float32))
        for i, (source, label, tags, at) in enumerate(rows)
    ])

    def ids(**kwargs: Any) -> list[int]:
        return sorted(store.ids_matching(build_filter(**kwargs)))

    assert ids(labels=["beach"]) == [1, 2]
    assert ids(tags=["sunny"]) == [1, 3]
    assert ids(tags=["sunny", "night"]) == [3]
    assert ids(source_prefix="s3://b/beach_") == [2]  # "_" is a literal, not a wildcard
    assert ids(source_prefix="/photos/100%") == [3]
    assert ids(since="150", until="300") == [2]
    assert ids(labels=["beach", "city"], since="200") == [2, 3]
