"""Train and register: fine-tune on a labelled folder, compare with the pretrained model on the
held-out half (protocol "half"), and store the result in the model registry. `lookalike train`
and the server's training jobs both run it; each says through the hooks how it shows progress."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lookalike.core.model_registry import ModelRegistry, ModelVersion
from lookalike.core.settings import Settings
from lookalike.embedder.training import EpochLog
from lookalike.training.data import LabelledImages
from lookalike.training.run import TrainOptions, TrainOutcome, compare_on_heldout, train_model

# A registered version's metrics keep the held-out comparison under this name.
HELDOUT = "heldout"


@dataclass(frozen=True, slots=True)
class TrainRun:
    """What a run made: the trained model, its report (the held-out comparison under protocol
    "half", else the out dir and the training metrics) and its registered version, if any."""

    outcome: TrainOutcome
    report: dict[str, Any]
    version: ModelVersion | None


@dataclass(frozen=True, slots=True)
class TrainHooks:
    """Where a run reports: each epoch, once trained (before the comparison) and once compared
    (before registering). A hook may raise to stop the run there (a cancelled job does)."""

    on_epoch: Callable[[EpochLog], None] | None = None
    on_trained: Callable[[TrainOutcome], None] | None = None
    on_compared: Callable[[Mapping[str, Any]], None] | None = None
    cancelled: Callable[[], bool] | None = None


def _read(path: Path | None) -> bytes | None:
    return path.read_bytes() if path is not None and path.exists() else None


def train_and_register(
    settings: Settings, dataset: LabelledImages, options: TrainOptions, *, out_dir: Path,
    registry: ModelRegistry | None, hooks: TrainHooks = TrainHooks(),
) -> TrainRun:
    """Train on `dataset` into `out_dir`, compare on the held-out half when the protocol keeps
    one, and register the model in `registry` when given."""
    outcome = train_model(settings, dataset, options, out_dir=out_dir, on_epoch=hooks.on_epoch,
                          cancelled=hooks.cancelled)
    if hooks.on_trained is not None:
        hooks.on_trained(outcome)
    report: dict[str, Any] = {"out_dir": str(outcome.out_dir), **outcome.metrics}
    half = options.protocol == "half"
    if half:
        report = compare_on_heldout(settings, dataset, options, outcome)
        if hooks.on_compared is not None:
            hooks.on_compared(report)
    version = None
    if registry is not None:
        version = registry.register(
            weights=outcome.weights_path.read_bytes(), spec=outcome.spec,
            metrics={**outcome.metrics, **({HELDOUT: report} if half else {})},
            curves_png=_read(outcome.files.get("curves_png")),
            curves_json=_read(outcome.files.get("curves_json")),
            hash_artefact=outcome.hash.to_bytes() if outcome.hash is not None else None)
    return TrainRun(outcome, report, version)
