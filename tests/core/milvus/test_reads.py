"""Reading the Milvus store on Milvus Lite: pages, counts, rows in batches."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pytest

from lookalike.core.errors import InvalidArgument, InvalidFilter
from lookalike.core.milvus import reads
from lookalike.core.settings import MilvusSettings
from lookalike.core.vector_store import MilvusVectorStore
from tests.core.milvus.records import DBA, DBA_SPEC, DIM, distinct, scattered, store_with


def test_pages_cover_every_id_once_in_id_order(client: Any) -> None:
    """Milvus Lite returns query rows in no set order; pages still run through the ids in
    order, each exactly once, with and without a filter."""
    records = scattered(2000)
    store = store_with(client, records)
    for filter_expr, wanted in (("", records),
                                ('label in ["l1", "l2"]',
                                 [r for r in records if r.meta.label in ("l1", "l2")])):
        seen = [m.id for offset in range(0, 2100, 300)
                for m in store.page(filter_expr, offset, 300)]
        assert seen == sorted(r.meta.id for r in wanted)
        assert store.count_matching(filter_expr) == len(wanted)
    first = store.page("", 0, 3)
    assert first == sorted((r.meta for r in records), key=lambda m: m.id)[:3]


def test_page_limits(client: Any) -> None:
    """offset + limit past MAX_TOP_K, a negative offset or an empty page are refused."""
    store = store_with(client, scattered(10), batches=1)
    for offset, limit in ((16000, 1000), (-1, 5), (0, 0)):
        with pytest.raises(InvalidArgument):
            store.page("", offset, limit)
    with pytest.raises(InvalidFilter):
        store.count_matching("no_such_field > 1")


@pytest.mark.parametrize("probed", [64, 3])
def test_label_counts(client: Any, monkeypatch: pytest.MonkeyPatch, probed: int) -> None:
    """Images per label, "" for unlabelled, within a filter: labels probed one by one, or past
    MAX_PROBED_LABELS counted from the remaining rows' label field."""
    monkeypatch.setattr(reads, "MAX_PROBED_LABELS", probed)
    records = scattered(500)
    store = store_with(client, records)
    assert store.label_counts() == dict(Counter(r.meta.label for r in records))
    assert store.label_counts("ingested_at < 100") == dict(
        Counter(r.meta.label for r in records if r.meta.ingested_at < 100))
    assert store.label_counts('label == "none"') == {}


def test_iteration_in_batches(client: Any) -> None:
    """Ids, vectors and records come back whole, in id order, in batches of the size asked."""
    store = MilvusVectorStore.open(client, "augmented", DBA_SPEC, DIM, MilvusSettings(), dba=DBA)
    stored = distinct(23)
    store.insert(stored)
    batches = list(store.iter_ids(batch_size=10))
    assert [len(b) for b in batches] == [10, 10, 3]
    assert [i for b in batches for i in b] == sorted(r.meta.id for r in stored)
    assert [i for b in store.iter_ids("ingested_at >= 120") for i in b] == [21, 22, 23]
    by_id = {r.meta.id: r for r in stored}
    for ids, (embedding, raw) in store.iter_vectors(("embedding", "raw"), batch_size=7):
        assert embedding.shape == raw.shape == (len(ids), DIM)
        np.testing.assert_array_equal(embedding, np.stack([by_id[i].embedding for i in ids]))
    seen = [r for batch in store.iter_records("raw", batch_size=8) for r in batch]
    assert [r.meta for r in seen] == [by_id[r.meta.id].meta for r in seen]
    assert len(seen) == 23
