"""Index choice: build parameters from the settings and from an operator's request."""

from __future__ import annotations

from typing import Any

import pytest

from lookalike.core.errors import ConfigError, InvalidArgument
from lookalike.core.milvus.vector_index import index_params, rebuild_params
from lookalike.core.settings import MilvusSettings
from tests.core.milvus.records import DIM


def test_pq_m_must_divide_the_dimension(client: Any) -> None:
    settings = MilvusSettings(uri="http://127.0.0.1:1", index_type="IVF_PQ", pq_m=3)
    with pytest.raises(ConfigError, match="8 is not a multiple of 3"):
        index_params(settings, DIM)
    assert index_params(settings.model_copy(update={"pq_m": 0}), 256)[1]["m"] == 64


def test_rebuild_params_are_checked() -> None:
    """Unknown types, parameters a type does not take, bad values and IVF_PQ on Lite are
    refused with what is allowed; given parameters override the settings'."""
    lite, server = MilvusSettings(), MilvusSettings(uri="http://127.0.0.1:19530")
    assert rebuild_params(server, 64, "ivf_pq", {"m": "16"}) == (
        "IVF_PQ", {"nlist": 1024, "m": 16, "nbits": 8})
    assert rebuild_params(lite, 64, "", {"efConstruction": "64"}) == (
        "HNSW", {"M": 16, "efConstruction": 64})
    with pytest.raises(InvalidArgument, match="known: HNSW, FLAT, IVF_FLAT, IVF_SQ8, IVF_PQ"):
        rebuild_params(lite, 64, "DISKANN", {})
    with pytest.raises(InvalidArgument, match="takes: nlist"):
        rebuild_params(lite, 64, "IVF_FLAT", {"M": "8"})
    with pytest.raises(InvalidArgument, match="integer"):
        rebuild_params(lite, 64, "HNSW", {"M": "eight"})
    with pytest.raises(InvalidArgument, match="M: "):
        rebuild_params(lite, 64, "HNSW", {"M": "2"})
    with pytest.raises(InvalidArgument, match="divide"):
        rebuild_params(server, 64, "IVF_PQ", {"m": "7"})
    with pytest.raises(ConfigError, match="Milvus Lite cannot build IVF_PQ"):
        rebuild_params(lite, 64, "IVF_PQ", {})
