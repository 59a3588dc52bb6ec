"""JobService: the RPCs that start, list, follow and cancel background jobs. Each start checks
its request (policy.py, the job roots), asks the composition root's starter for the work
(runners.py) and hands it to the registry (registry.py); replies are mapped by proto.py."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from lookalike.core.errors import ConfigError
from lookalike.core.paths import JobRoots
from lookalike.services.gen.lookalike.v1 import lookalike_pb2 as pb
from lookalike.services.gen.lookalike.v1 import lookalike_pb2_grpc as pb_grpc
from lookalike.services.jobs.policy import (
    EVALUATE,
    INGEST,
    ROLLOUT,
    TRAIN,
    rollout_cancel_refusal,
    rollout_version,
    train_params,
)
from lookalike.services.jobs.proto import job_pb, model_pb
from lookalike.services.jobs.registry import JobRegistry
from lookalike.services.jobs.runners import JobRunners


class JobServicer(pb_grpc.JobServiceServicer):
    """StartIngest, StartEvaluation, StartTraining, StartRollOut, ListModels, GetJob, ListJobs,
    CancelJob.

    Sources are checked against `roots` (server.job_roots) when a job starts; without `runners`
    or roots, jobs are refused.
    """

    def __init__(self, runners: JobRunners | None, roots: Sequence[str] = ()) -> None:
        self._runners = runners
        self._roots = JobRoots(roots)
        self.registry = JobRegistry()

    def _require_runners(self) -> JobRunners:
        if self._runners is None:
            raise ConfigError("this server was started without job runners: run `lookalike "
                              "ingest` or `lookalike eval` instead")
        return self._runners

    def StartIngest(
        self, request: pb.StartIngestRequest, context: grpc.ServicerContext
    ) -> pb.Job:
        """Check the source, then ingest it into the served collection in the background."""
        runners = self._require_runners()
        source = self._roots.source(request.source)
        self.registry.require_free(INGEST)
        return job_pb(self.registry.start(INGEST, source, runners.ingest(source)))

    def StartEvaluation(
        self, request: pb.StartEvaluationRequest, context: grpc.ServicerContext
    ) -> pb.Job:
        """Check the folder and configurations, then evaluate them in the background."""
        runners = self._require_runners()
        folder = str(self._roots.folder(request.folder, "evaluation"))
        self.registry.require_free(EVALUATE)
        work = runners.evaluate(folder, list(request.configs), request.ablation)
        return job_pb(self.registry.start(EVALUATE, folder, work))

    def StartTraining(
        self, request: pb.TrainRequest, context: grpc.ServicerContext
    ) -> pb.Job:
        """Check the folder and settings, then fine-tune, compare and register in the
        background."""
        runners = self._require_runners()
        folder = str(self._roots.folder(request.folder, "training"))
        params = train_params(folder, request.loss, request.bits, request.epochs,
                              request.backbone)
        self.registry.require_free(TRAIN)
        return job_pb(self.registry.start(TRAIN, folder, runners.train(params)))

    def StartRollOut(
        self, request: pb.RollOutRequest, context: grpc.ServicerContext
    ) -> pb.Job:
        """Check the version and the confirmation, then re-index the served collection with
        that model in the background and swap it in."""
        runners = self._require_runners()
        version = rollout_version(request.version, request.confirm)
        self.registry.require_free(ROLLOUT)
        return job_pb(self.registry.start(ROLLOUT, version, runners.rollout(version),
                                          cancel_refusal=rollout_cancel_refusal(version)))

    def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.ServicerContext
    ) -> pb.ListModelsResponse:
        """The model registry's versions, oldest first."""
        runners = self._require_runners()
        return pb.ListModelsResponse(models=[model_pb(m) for m in runners.models()])

    def GetJob(
        self, request: pb.GetJobRequest, context: grpc.ServicerContext
    ) -> pb.Job:
        """A job's state, progress and summary."""
        return job_pb(self.registry.get(request.id))

    def ListJobs(
        self, request: pb.ListJobsRequest, context: grpc.ServicerContext
    ) -> pb.ListJobsResponse:
        """Every job kept, most recent first."""
        return pb.ListJobsResponse(jobs=[job_pb(j) for j in self.registry.list()])

    def CancelJob(
        self, request: pb.CancelJobRequest, context: grpc.ServicerContext
    ) -> pb.Job:
        """Ask a job to stop at its next batch."""
        return job_pb(self.registry.cancel(request.id))
