"""What jobs report, as plain values: the summaries of ingest, evaluation and training jobs and
the registry's model versions. The JobService builds them on the server; the client rebuilds
them from its replies, so the UI reads the same types."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class BadFile:
    """A file an ingest job did not store, and why."""

    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class IngestSummary:
    """What an ingest job did so far (or in all, once finished)."""

    seen: int
    added: int
    already_stored: int
    duplicates: int
    failed: tuple[BadFile, ...]
    seconds: float


@dataclass(frozen=True, slots=True)
class EvalRow:
    """One configuration's scores (p@1, map, ndcg@10, ...), P@K curve and per-class AP."""

    config: str
    levers: str
    scores: dict[str, float]
    pk_curve: tuple[float, ...]
    per_class_ap: dict[str, float]


@dataclass(frozen=True, slots=True)
class EvalSummary:
    """An evaluation's dataset and a row per configuration measured so far."""

    dataset: str
    kind: str
    images: int
    queries: int
    rows: tuple[EvalRow, ...]


@dataclass(frozen=True, slots=True)
class TrainEpoch:
    """One epoch of a training job: its mean loss, validation mAP after it, and its duration."""

    epoch: int
    train_loss: float
    val_map: float
    seconds: float


@dataclass(frozen=True, slots=True)
class TrainSummary:
    """A training job so far: what it trains on and how, the epochs run (the curves), then the
    held-out comparison with the pretrained model and the registered version."""

    dataset: str
    classes: int
    images: int
    backbone: str
    loss: str
    bits: int
    epochs_planned: int
    epochs: tuple[TrainEpoch, ...] = ()
    best_epoch: int = 0
    stopped_early: bool = False
    # None until the comparison on the held-out half has measured them.
    pretrained_map: float | None = None
    finetuned_map: float | None = None
    hashed_map: float | None = None
    float_map: float | None = None
    comparison: dict[str, float] = field(default_factory=dict)
    version: str = ""
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A registered model version as ListModels shows it."""

    version: str
    created_at: int  # unix seconds
    backbone: str
    weights_id: str
    loss: str
    bits: int
    metrics: dict[str, float]
    trained_on: str
    size_bytes: int
    serving: bool
