"""What the client hands back and takes: plain frozen values rebuilt from the API's replies,
so callers (the UI, the CLI) never see protobuf messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lookalike.core.profiles import PROFILES, Profile
from lookalike.core.search_defaults import DEFAULT_TOP_K
from lookalike.embedder.losses import LOSS_HELP, LOSSES
from lookalike.embedder.spec import EmbedderSpec
from lookalike.services.job_summaries import EvalSummary, IngestSummary, TrainSummary


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result (or, from `get`, one stored image with score 0)."""

    id: int
    score: float
    label: str
    source: str
    sha256: str
    width: int
    height: int
    tags: tuple[str, ...]
    thumbnail: bytes
    thumbnail_url: str
    image_url: str
    blob_key: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    ingested_at: int = 0
    # Geometrically consistent local feature matches; None where the search was not verified.
    inliers: int | None = None
    # The stored original, only from get(..., include_originals=True).
    image: bytes = b""


@dataclass(frozen=True, slots=True)
class SearchResponse:
    """Hits best first, the server-side time, the model's share of it, and how long the query
    waited for the model."""

    hits: list[Hit]
    took_ms: float
    collection: str
    embed_ms: float = 0.0
    queue_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """One query of `batch_search`: exactly one of image, image_id, vector."""

    image: bytes | None = None
    image_id: int | None = None
    vector: NDArray[np.float32] | None = None
    top_k: int = DEFAULT_TOP_K
    filter_expr: str = ""
    min_score: float | None = None
    include_thumbnails: bool = False
    ids_only: bool = False
    # None: the server's setting.
    qe_n: int | None = None
    verify: bool | None = None
    # None: the server's settings. mode: ann, hash_rerank or routed.
    mode: str | None = None
    ef: int | None = None
    nprobe: int | None = None
    rerank_factor: int | None = None
    route_top_n: int | None = None
    # Any of these labels, all of these tags (ANDed with filter_expr).
    labels: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BatchSearchResult:
    """One query's response, or the status it failed with."""

    response: SearchResponse | None
    error_code: str = ""
    error: str = ""


@dataclass(frozen=True, slots=True)
class EmbedResult:
    """One image's embedding, or why it has none, and its predicted ImageNet class ("" when
    the model has no classifier)."""

    vector: NDArray[np.float32] | None
    error: str = ""
    category: str = ""


@dataclass(frozen=True, slots=True)
class EmbedResponse:
    """One result per image, in order, and the model's spec."""

    results: list[EmbedResult]
    model: EmbedderSpec


@dataclass(frozen=True, slots=True)
class UpsertItem:
    """An encoded image and its metadata."""

    image: bytes
    label: str = ""
    tags: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = ""


@dataclass(frozen=True, slots=True)
class UpsertResult:
    """The stored image (created or replaced), or why it was not stored."""

    image: Hit | None
    created: bool = False
    error: str = ""


@dataclass(frozen=True, slots=True)
class GetResponse:
    """Stored images among the ids asked for, and the ids that are not stored."""

    images: list[Hit]
    missing_ids: list[int]


@dataclass(frozen=True, slots=True)
class Stats:
    """What the collection holds and how it is indexed."""

    collection: str
    physical_collection: str
    count: int
    index_type: str
    index_params: dict[str, str]
    metric_type: str
    model: EmbedderSpec


@dataclass(frozen=True, slots=True)
class Page:
    """One page of stored images in id order, and how many match in all."""

    images: list[Hit]
    total: int


@dataclass(frozen=True, slots=True)
class CollectionSummary:
    """A physical Milvus collection: its aliases, size, model and index."""

    name: str
    aliases: tuple[str, ...]
    count: int
    model: EmbedderSpec | None
    index_type: str
    index_params: dict[str, str]
    serving: bool


@dataclass(frozen=True, slots=True)
class RebuildResult:
    """The index the served collection now has, and how long the build took."""

    index_type: str
    index_params: dict[str, str]
    seconds: float


@dataclass(frozen=True, slots=True)
class DropResult:
    """How many images the dropped collection held; whether an empty one replaced it."""

    dropped_images: int
    recreated: bool


JOB_STATES_FINISHED = ("succeeded", "failed", "cancelled")
# What a training job may ask for: the trainer's own list, so a new loss reaches the UI by itself.
TRAINING_LOSSES: tuple[str, ...] = LOSSES
TRAINING_LOSS_HELP: dict[str, str] = LOSS_HELP
# The search profiles a collection can be built with, and what each was measured to cost.
SEARCH_PROFILES: dict[str, Profile] = PROFILES


@dataclass(frozen=True, slots=True)
class Job:
    """A background job on the server (ingest, evaluate, train or rollout) and how far it got;
    the summary of its kind (a roll-out has none: its progress and message say it all)."""

    id: str
    kind: str
    state: str
    source: str
    done: int
    total: int
    rate_per_s: float
    eta_s: float
    message: str
    started_at: int
    finished_at: int
    ingest: IngestSummary | None
    evaluation: EvalSummary | None
    training: TrainSummary | None = None

    @property
    def finished(self) -> bool:
        """Whether it stopped (succeeded, failed or cancelled)."""
        return self.state in JOB_STATES_FINISHED
