"""The search engine with the vector store's modes: per-query parameters reach the store, and
image queries are refused once a re-index moved the collection to another model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from lookalike.app.compose import blobs_from
from lookalike.core.errors import ConfigError, ModelSpecMismatch
from lookalike.core.milvus.vector_index import SearchParams
from lookalike.core.schemas import ImageMeta, ImageRecord
from lookalike.core.settings import MilvusSettings
from lookalike.core.vector_store import MilvusVectorStore
from lookalike.embedder.runtime import Embedder
from lookalike.services.search import Query, SearchEngine
from tests.conftest import encode, gradient_image, make_settings


def test_image_queries_refused_after_the_alias_moves_to_another_model(
    client: Any, embedder: Embedder, tmp_path: Path
) -> None:
    spec = embedder.spec
    settings = MilvusSettings(index_type="FLAT", partition_by="label")
    store = MilvusVectorStore.open(client, "moved", spec.to_dict(), spec.dim, settings)
    images: list[Image.Image] = [gradient_image(seed=s) for s in range(4)]
    vectors = embedder.embed_images(images)
    store.insert([
        ImageRecord(ImageMeta(id=i + 1, sha256=f"{i:064x}", blob_key="k", source=str(i),
                              label="a" if i < 2 else "b"), vectors[i])
        for i in range(4)
    ])
    engine = SearchEngine(embedder, store, blobs_from(make_settings(tmp_path)), max_top_k=100,
                          presign_expiry_s=60)
    query = Query(image=encode(images[2]))
    assert engine.search(query, 1).hits[0].image.id == 3
    routed = engine.search(query, 4, params=SearchParams(mode="routed", route_top_n=1))
    assert {h.image.label for h in routed.hits} == {"b"}
    with pytest.raises(ConfigError, match="lookalike hash"):
        engine.search(query, 1, params=SearchParams(mode="hash_rerank"))

    other = {**spec.to_dict(), "backbone": "mobilenet_v2"}
    version = store.create_version(other, spec.dim)
    version.insert([ImageRecord(ImageMeta(id=9, sha256=f"{9:064x}", blob_key="k", source="9"),
                                np.ones(spec.dim, np.float32) / np.sqrt(spec.dim))])
    store.point_alias(version.name)
    store.layout(refresh=True)  # what a server sees within LAYOUT_TTL_S
    with pytest.raises(ModelSpecMismatch, match="mobilenet_v2"):
        engine.search(query, 1)
    # Id queries still answer: their vectors come from the collection itself.
    assert engine.search(Query(image_id=9), 1).hits == []
