"""What the composition root hands the JobService to run jobs with: a starter per kind of job,
and the model registry's listing. A starter checks its request and refuses it with a typed
error (so the caller hears at once), or returns the work the registry runs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lookalike.services.job_summaries import ModelInfo
from lookalike.services.jobs.policy import TrainParams
from lookalike.services.jobs.registry import JobWork

# (source) -> work; raises a typed error to refuse the job.
IngestStarter = Callable[[str], JobWork]
# (folder, configuration names, ablation) -> work; raises a typed error to refuse the job.
EvalStarter = Callable[[str, Sequence[str], bool], JobWork]
# (checked request) -> work; raises a typed error to refuse the job.
TrainStarter = Callable[[TrainParams], JobWork]
# (model version) -> work; raises a typed error (NotFound naming the known versions) to refuse.
RollOutStarter = Callable[[str], JobWork]
# The registry's versions, oldest first.
ModelLister = Callable[[], Sequence[ModelInfo]]


@dataclass(frozen=True, slots=True)
class JobRunners:
    """What the composition root hands the server to run jobs with: a starter per kind, and
    the model registry's listing (the versions a roll-out may name)."""

    ingest: IngestStarter
    evaluate: EvalStarter
    train: TrainStarter
    rollout: RollOutStarter
    models: ModelLister
