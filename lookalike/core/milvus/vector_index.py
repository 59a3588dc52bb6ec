"""Index choice and search parameters: what the settings ask Milvus to build, and how each query
searches it.

Pure functions of the settings and the query; the vector store applies them. Milvus Lite builds
FLAT, HNSW, IVF_FLAT and IVF_SQ8 only: asking it for IVF_PQ or binary hash codes is an error
here, never a silent fallback to another index.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, get_args

from pydantic import ValidationError

from lookalike.core.errors import ConfigError, InvalidArgument
from lookalike.core.settings import IndexType, MilvusSettings, SearchMode

SEARCH_MODES: tuple[SearchMode, ...] = ("ann", "hash_rerank", "routed")
LITE_INDEXES = ("FLAT", "HNSW", "IVF_FLAT", "IVF_SQ8")
# Lossy indexes: their scores are approximations, so candidates are re-scored exactly by default.
_LOSSY = ("IVF_PQ", "IVF_SQ8")
MAX_RERANK_FACTOR = 100
INDEX_TYPES: tuple[IndexType, ...] = get_args(IndexType)
# The build parameters of each float index, by Milvus name, and the setting each one overrides.
BUILD_PARAMS: dict[str, dict[str, str]] = {
    "FLAT": {},
    "HNSW": {"M": "hnsw_m", "efConstruction": "hnsw_ef_construction"},
    "IVF_FLAT": {"nlist": "ivf_nlist"},
    "IVF_SQ8": {"nlist": "ivf_nlist"},
    "IVF_PQ": {"nlist": "ivf_nlist", "m": "pq_m", "nbits": "pq_nbits"},
}


def is_lite(settings: MilvusSettings) -> bool:
    """Whether the settings point at Milvus Lite (a local file) rather than a server."""
    return "://" not in settings.uri


def check_supported(settings: MilvusSettings, what: str) -> None:
    """Raise ConfigError when Milvus Lite is asked for something only a server builds."""
    if is_lite(settings):
        raise ConfigError(
            f"Milvus Lite cannot build {what}; use one of {', '.join(LITE_INDEXES)} "
            "(LOOKALIKE_MILVUS__INDEX_TYPE), or a Milvus server (LOOKALIKE_MILVUS__URI)"
        )


def pq_m(settings: MilvusSettings, dim: int) -> int:
    """IVF_PQ sub-quantisers: the setting, or one per 4 dimensions; it must divide `dim`.

    One per 4 dimensions, not 8: at 1M vectors (`bench search`) it raised recall@10 after a x4
    float re-rank from 0.81 to 0.97, for codes still 1/16 of the float vectors."""
    m = settings.pq_m or max(1, dim // 4)
    if dim % m:
        raise ConfigError(
            f"IVF_PQ needs pq_m to divide the dimension: {dim} is not a multiple of {m} "
            "(LOOKALIKE_MILVUS__PQ_M)"
        )
    return m


def index_params(settings: MilvusSettings, dim: int) -> tuple[str, dict[str, int]]:
    """The float index to build and its build parameters; refused where it cannot be built."""
    match settings.index_type:
        case "HNSW":
            return "HNSW", {"M": settings.hnsw_m, "efConstruction": settings.hnsw_ef_construction}
        case "FLAT":
            return "FLAT", {}
        case "IVF_FLAT" | "IVF_SQ8":
            return settings.index_type, {"nlist": settings.ivf_nlist}
        case "IVF_PQ":
            check_supported(settings, "IVF_PQ")
            return "IVF_PQ", {
                "nlist": settings.ivf_nlist, "m": pq_m(settings, dim), "nbits": settings.pq_nbits,
            }
    raise ConfigError(f"unknown index type {settings.index_type!r}")


def rebuild_params(
    settings: MilvusSettings, dim: int, index_type: str, params: Mapping[str, str]
) -> tuple[str, dict[str, int]]:
    """The float index an operator asks for: `index_type` (empty: the settings') with `params`
    (Milvus names, decimal values) over the settings' build parameters.

    InvalidArgument for an unknown type, a parameter the type does not take or a value out of
    the settings' range; ConfigError where the store cannot build it (IVF_PQ on Milvus Lite).
    """
    kind = index_type.strip().upper() or settings.index_type
    if kind not in BUILD_PARAMS:
        raise InvalidArgument(
            f"unknown index type {index_type!r}; known: {', '.join(INDEX_TYPES)}"
        )
    takes = BUILD_PARAMS[kind]
    unknown = sorted(set(params) - set(takes))
    if unknown:
        raise InvalidArgument(
            f"{kind} takes no parameter {', '.join(unknown)}; it takes: "
            f"{', '.join(takes) or 'none'}"
        )
    updates: dict[str, Any] = {"index_type": kind}
    for name, value in params.items():
        try:
            updates[takes[name]] = int(value.strip())
        except ValueError:
            raise InvalidArgument(f"{kind} parameter {name} must be an integer, got {value!r}") from None
    try:
        wanted = MilvusSettings.model_validate(settings.model_dump() | updates)
    except ValidationError as exc:
        by_setting = {setting: name for name, setting in takes.items()}
        problems = "; ".join(
            f"{by_setting.get(str(e['loc'][0]), e['loc'][0])}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidArgument(f"{kind} parameters refused: {problems}") from None
    if kind == "IVF_PQ" and "m" in params and wanted.pq_m and dim % wanted.pq_m:
        raise InvalidArgument(f"IVF_PQ m must divide the dimension {dim}, got {wanted.pq_m}")
    return index_params(wanted, dim)


@dataclass(frozen=True, slots=True)
class SearchParams:
    """Per-query overrides of the settings' search parameters; None keeps the setting.

    `mode`: ann (the float index), hash_rerank (Hamming search over binary codes, then exact
    float re-scoring) or routed (only the query's `route_top_n` nearest categories).
    `rerank_factor` r: top_k x r candidates are re-scored with the stored float vectors.
    """

    mode: SearchMode | None = None
    ef: int | None = None
    nprobe: int | None = None
    rerank_factor: int | None = None
    route_top_n: int | None = None

    def __post_init__(self) -> None:
        if self.mode is not None and self.mode not in SEARCH_MODES:
            raise InvalidArgument(
                f"unknown search mode {self.mode!r}; known: {', '.join(SEARCH_MODES)}"
            )
        for name, low, high in (("ef", 1, 32768), ("nprobe", 1, 65536),
                                ("rerank_factor", 1, MAX_RERANK_FACTOR),
                                ("route_top_n", 1, 1024)):
            value = getattr(self, name)
            if value is not None and not low <= value <= high:
                raise InvalidArgument(f"{name} must be between {low} and {high}, got {value}")


@dataclass(frozen=True, slots=True)
class ResolvedSearch:
    """One query's effective parameters: settings overlaid with its SearchParams."""

    mode: SearchMode
    ef: int
    nprobe: int
    rerank_factor: int
    route_top_n: int
    hash_nprobe: int


def resolve(
    settings: MilvusSettings, params: SearchParams | None, index_type: str | None = None
) -> ResolvedSearch:
    """The settings overlaid with the query's overrides; rerank_factor 0 in the settings means
    10 for hash codes, 4 for lossy float indexes, else none. `index_type` is the index the
    collection has (None: the settings'), which differs from the settings' after a rebuild."""
    p = params or SearchParams()
    mode = p.mode or settings.search_mode
    factor = p.rerank_factor or settings.rerank_factor
    if not factor:
        lossy = (index_type or settings.index_type) in _LOSSY
        factor = 10 if mode == "hash_rerank" else 4 if lossy else 1
    return ResolvedSearch(
        mode=mode,
        ef=p.ef or settings.search_ef,
        nprobe=p.nprobe or settings.ivf_nprobe,
        rerank_factor=factor,
        route_top_n=p.route_top_n or settings.route_top_n,
        hash_nprobe=p.nprobe or settings.hash_nprobe,
    )


def float_search_params(
    index_type: str, search: ResolvedSearch, limit: int, min_score: float | None = None
) -> dict[str, Any]:
    """Milvus search parameters for the float index; with `min_score`, a range search."""
    params: dict[str, Any] = {}
    match index_type:
        case "HNSW":
            params["ef"] = max(search.ef, limit)
        case "IVF_FLAT" | "IVF_SQ8" | "IVF_PQ":
            params["nprobe"] = search.nprobe
    if min_score is not None:
        # Range search on IP: keep radius < score <= range_filter (scores of unit vectors <= 1).
        params["radius"] = float(min_score)
        params["range_filter"] = 1.0 + 1e-3
    return {"params": params}


def check_min_score(min_score: float | None) -> None:
    """Raise InvalidArgument unless `min_score` is None or a cosine bound in [-1, 1)."""
    if min_score is not None and not -1.0 <= min_score < 1.0:
        raise InvalidArgument(f"min_score must be in [-1, 1), got {min_score}")

