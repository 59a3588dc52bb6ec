"""Rebuilding the float index of a Milvus Lite collection."""

from __future__ import annotations

from typing import Any

import numpy as np

from tests.core.milvus.records import scattered, store_with


def test_rebuild_index_switches_and_reports_the_index(client: Any) -> None:
    """FLAT, then HNSW with M=8, then the settings' index: each reported as built, searches
    after each still find a stored vector first."""
    records = scattered(300)
    store = store_with(client, records, batches=2)
    query = np.stack([records[5].embedding])
    for index_type, params, wanted in (("FLAT", {}, {}),
                                       ("HNSW", {"M": "8"}, {"M": "8", "efConstruction": "200"}),
                                       ("", {}, {"M": "16", "efConstruction": "200"})):
        layout = store.rebuild_index(index_type, params)
        assert (layout.index_type, layout.index_params) == (index_type or "HNSW", wanted)
        assert store.describe().index_type == layout.index_type
        assert store.search_ids(query, top_k=1)[0][0].id == records[5].meta.id
