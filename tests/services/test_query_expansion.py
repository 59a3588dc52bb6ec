"""alpha-query expansion in the search engine, on a toy Milvus Lite collection whose answer is known."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from lookalike.app.compose import blobs_from
from lookalike.core.errors import InvalidArgument
from lookalike.core.rerank import alpha_qe
from lookalike.core.schemas import ImageMeta, ImageRecord
from lookalike.core.vector_store import MilvusVectorStore, connect_milvus
from lookalike.embedder.runtime import Embedder
from lookalike.services.search import Query, Reranking, SearchEngine
from tests.conftest import make_settings

DIM = 8


def _unit(angle_deg: float, axis: int) -> NDArray[np.float32]:
    """cos(angle) along e0 plus sin(angle) along e<axis>."""
    v = np.zeros(DIM, dtype=np.float32)
    v[0] = math.cos(math.radians(angle_deg))
    v[axis] = math.sin(math.radians(angle_deg))
    return v


# The query is e0. "near1" and "near2" lie towards e1 and are its nearest neighbours; "far" lies
# further towards e1, behind "off" (towards e2) for the plain query, but once the query is pulled
# towards e1 by its neighbours, "far" overtakes "off".
ITEMS = {
    "near1": _unit(20, 1),
    "near2": _unit(25, 1),
    "off": _unit(45, 2),
    "far": _unit(55, 1),
    "other": _unit(70, 3),
}
IDS = {name: i + 1 for i, name in enumerate(ITEMS)}
QUERY = _unit(0, 1)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> MilvusVectorStore:
    """The toy vectors in a Milvus Lite collection of their own."""
    settings = make_settings(tmp_path_factory.mktemp("qe-data"))
    client = connect_milvus(settings.milvus_uri, settings.milvus)
    store = MilvusVectorStore.open(client, "toy", {"name": "toy", "dim": DIM}, DIM, settings.milvus)
    store.insert([
        ImageRecord(
            meta=ImageMeta(id=IDS[name], sha256=f"{IDS[name]:064x}", blob_key=f"images/{name}.png",
                           source=name, label="far" if name == "far" else "toy"),
            embedding=vector,
        )
        for name, vector in ITEMS.items()
    ])
    return store


def _engine(store: MilvusVectorStore, embedder: Embedder, tmp_path: Path,
            reranking: Reranking | None = None) -> SearchEngine:
    # Vector and id queries never call the embedder; the engine only needs one to exist.
    return SearchEngine(embedder, store, blobs_from(make_settings(tmp_path)), max_top_k=100,
                        presign_expiry_s=60, reranking=reranking)


def _names(engine: SearchEngine, query: Query, top_k: int, filter_expr: str = "",
           qe_n: int | None = None) -> list[str]:
    return [h.image.source for h in engine.search(query, top_k, filter_expr, qe_n=qe_n).hits]


def test_expanded_query_reaches_an_item_the_plain_query_misses(
    store: MilvusVectorStore, embedder: Embedder, tmp_path: Path
) -> None:
    """Plain top 3 is near1, near2, off; with qe_n=2 "far" replaces "off"."""
    engine = _engine(store, embedder, tmp_path)
    assert _names(engine, Query(vector=QUERY), top_k=3) == ["near1", "near2", "off"]
    assert _names(engine, Query(vector=QUERY), top_k=3, qe_n=2) == ["near1", "near2", "far"]


def test_scores_are_those_of_the_expanded_vector(
    store: MilvusVectorStore, embedder: Embedder, tmp_path: Path
) -> None:
    """The second search uses alpha_qe of the query and its qe_n neighbours, weighted by sim**alpha."""
    engine = _engine(store, embedder, tmp_path, Reranking(qe_alpha=2.0))
    near = np.stack([ITEMS["near1"], ITEMS["near2"]])
    sims = near @ QUERY
    expanded = alpha_qe(QUERY[None], near[None], sims[None], 2.0)[0]
    hits = engine.search(Query(vector=QUERY), top_k=5, qe_n=2).hits
    assert [h.score for h in hits] == pytest.approx(
        [float(ITEMS[h.image.source] @ expanded) for h in hits], abs=1e-5
    )
    assert [h.image.source for h in hits] == sorted(
        ITEMS, key=lambda name: -float(ITEMS[name] @ expanded)
    )


def test_engine_default_applies_and_a_query_can_switch_it_off(
    store: MilvusVectorStore, embedder: Embedder, tmp_path: Path
) -> None:
    """Reranking.qe_n is the default for every query (ids-only too); qe_n=0 on a query turns it off."""
    engine = _engine(store, embedder, tmp_path, Reranking(qe_n=2))
    assert _names(engine, Query(vector=QUERY), top_k=3) == ["near1", "near2", "far"]
    assert _names(engine, Query(vector=QUERY), top_k=3, qe_n=0) == ["near1", "near2", "off"]
    ranked = engine.rank(Query(vector=QUERY), top_k=3).ranked
    assert [r.id for r in ranked] == [IDS["near1"], IDS["near2"], IDS["far"]]
    assert all(r.inliers is None for r in ranked)


def test_expansion_keeps_the_filter_and_the_exclusions(
    store: MilvusVectorStore, embedder: Embedder, tmp_path: Path
) -> None:
    """Neighbours come from the filtered set, and a stored query never finds itself."""
    engine = _engine(store, embedder, tmp_path, Reranking(qe_n=2))
    filtered = _names(engine, Query(vector=QUERY), top_k=5, filter_expr='label == "toy"')
    assert "far" not in filtered
    assert len(filtered) == 4
    by_id = _names(engine, Query(image_id=IDS["near1"]), top_k=5)
    assert sorted(by_id) == sorted(set(ITEMS) - {"near1"})


def test_out_of_range_qe_n_is_refused(
    store: MilvusVectorStore, embedder: Embedder, tmp_path: Path
) -> None:
    """qe_n above 100 is an InvalidArgument, not a deep search."""
    engine = _engine(store, embedder, tmp_path)
    with pytest.raises(InvalidArgument, match="qe_n"):
        engine.search(Query(vector=QUERY), qe_n=101)
