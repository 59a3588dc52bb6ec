"""JobService: background ingest, evaluation, training and roll-out jobs the server runs for
its clients.

The composition root hands the server `JobRunners`: one starter per kind of job. A starter
checks its request and refuses it with a typed error (so the caller hears at once), or returns
the work to run; the `JobRegistry` runs that work in a background thread, one job per kind at a
time, and keeps the last finished jobs for clients to look at. Work reports its progress and
summary through a `JobContext` and polls it for cancellation. Sources (and the labelled folders
training reads) must lie inside the server's job roots (`server.job_roots`); a roll-out names a
model version of the registry instead, which the runners also list.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc

from lookalike.core.errors import ConfigError, InvalidArgument, LookalikeError, NotFound
from lookalike.core.paths import JobRoots
from lookalike.embedder.errors import EmbedderError
from lookalike.embedder.hashing import HASH_BITS
from lookalike.services.errors import Overloaded
from lookalike.services.gen.lookalike.v1 import lookalike_pb2 as pb
from lookalike.services.gen.lookalike.v1 import lookalike_pb2_grpc as pb_grpc
from lookalike.services.job_summaries import BadFile as BadFile
from lookalike.services.job_summaries import EvalRow as EvalRow
from lookalike.services.job_summaries import EvalSummary as EvalSummary
from lookalike.services.job_summaries import IngestSummary as IngestSummary
from lookalike.services.job_summaries import ModelInfo as ModelInfo
from lookalike.services.job_summaries import TrainEpoch as TrainEpoch
from lookalike.services.job_summaries import TrainSummary as TrainSummary

log = logging.getLogger("lookalike.jobs")

KEEP_FINISHED = 50
INGEST, EVALUATE, TRAIN, ROLLOUT = "ingest", "evaluate", "train", "rollout"
LOSSES = ("hash", "triplet", "arcface")
DEFAULT_LOSS = "hash"
# The learned hash layer is served as an ITQ artefact, so its bits are one of HASH_BITS; 48 is
# the latent layer of Lin et al. (CVPRW 2015).
DEFAULT_BITS = 48
# A training job asking for more epochs is refused: on a CPU server it would run for days.
MAX_EPOCHS = 200
QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    "queued", "running", "succeeded", "failed", "cancelled")
ACTIVE = (QUEUED, RUNNING)


class JobCancelled(Exception):
    """Raised by `JobContext.raise_if_cancelled` to stop a job's work where it stands."""


class JobBusy(Overloaded):
    """A job of the same kind is already running."""


Summary = IngestSummary | EvalSummary | TrainSummary


@dataclass(frozen=True, slots=True)
class TrainParams:
    """A training job's request, checked: a folder inside the job roots, a known loss, the hash
    code's bits, at most this many epochs (0: the runner's default), a backbone ("": the
    served model's)."""

    folder: str
    loss: str
    bits: int
    epochs: int
    backbone: str


class JobContext:
    """What running work sees of its job: the cancel flag, and where progress goes."""

    def __init__(self, job: _Job, lock: threading.Lock) -> None:
        self._job = job
        self._lock = lock

    @property
    def cancelled(self) -> bool:
        """Whether the job was asked to stop."""
        return self._job.cancel.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise JobCancelled once the job was asked to stop."""
        if self.cancelled:
            raise JobCancelled

    def progress(self, done: int, total: int | None = None, message: str = "") -> None:
        """Units done so far, the units expected (None: unknown), and what it is doing now
        (kept when not given)."""
        with self._lock:
            self._job.done = done
            self._job.total = total or 0
            if message:
                self._job.message = message

    def report(self, message: str = "", summary: Summary | None = None) -> None:
        """What the job is doing now, and its summary so far (each kept when not given)."""
        with self._lock:
            if message:
                self._job.message = message
            if summary is not None:
                self._job.summary = summary


JobWork = Callable[[JobContext], None]
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


@dataclass(slots=True)
class _Job:
    id: str
    kind: str
    source: str
    state: str = QUEUED
    done: int = 0
    total: int = 0
    message: str = "queued"
    started_at: float = field(default_factory=time.time)
    finished_at: float = 0.0
    summary: Summary | None = None
    # Why the job cannot be stopped part way ("": it can).
    cancel_refusal: str = ""
    cancel: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    started: float = field(default_factory=time.monotonic)
    finished: float = 0.0


def train_params(folder: str, loss: str, bits: int, epochs: int, backbone: str) -> TrainParams:
    """A training request checked (unset loss: hash, unset bits: 48); InvalidArgument naming
    what is wrong."""
    loss = loss.strip() or DEFAULT_LOSS
    if loss not in LOSSES:
        raise InvalidArgument(f"unknown loss {loss!r}: choose one of {', '.join(LOSSES)}")
    bits = bits or DEFAULT_BITS
    if bits not in HASH_BITS:
        raise InvalidArgument(f"the hash code has {', '.join(map(str, HASH_BITS))} bits "
                              f"(0: {DEFAULT_BITS}), not {bits}")
    if not 0 <= epochs <= MAX_EPOCHS:
        raise InvalidArgument(f"epochs must lie between 1 and {MAX_EPOCHS} (or be 0 for the "
                              f"default), got {epochs}")
    return TrainParams(folder=folder, loss=loss, bits=bits, epochs=epochs,
                       backbone=backbone.strip())


class JobRegistry:
    """Jobs running in background threads, one per kind at a time, and the last finished ones.

    Thread-safe: every field of every job is read and written under one lock.
    """

    def __init__(self, keep_finished: int = KEEP_FINISHED) -> None:
        self._keep_finished = keep_finished
        self._lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}  # in start order

    def require_free(self, kind: str) -> None:
        """Raise JobBusy when a job of this kind is queued or running."""
        with self._lock:
            self._require_free(kind)

    def _require_free(self, kind: str) -> None:
        running = next((j for j in self._jobs.values() if j.kind == kind and j.state in ACTIVE),
                       None)
        if running is not None:
            raise JobBusy(
                f"{kind} job {running.id} is still running on {running.source}: wait for it to "
                "finish or cancel it first"
            )

    def start(self, kind: str, source: str, work: JobWork, *, cancel_refusal: str = "") -> pb.Job:
        """Run `work` in the background as a new job; JobBusy when one of this kind runs.

        With a `cancel_refusal`, asking the job to stop is refused with that reason (work that
        must not stop part way, and does not poll for it)."""
        with self._lock:
            self._require_free(kind)
            job = _Job(id=uuid.uuid4().hex[:12], kind=kind, source=source,
                       cancel_refusal=cancel_refusal)
            self._jobs[job.id] = job
            job.thread = threading.Thread(target=self._run, args=(job, work),
                                          name=f"job-{kind}-{job.id}", daemon=True)
            job.thread.start()
            return _job_pb(job)

    def get(self, job_id: str) -> pb.Job:
        """The job as it is now; NotFound for an unknown (or long forgotten) id."""
        with self._lock:
            return _job_pb(self._find(job_id))

    def list(self) -> list[pb.Job]:
        """Every job kept, most recent first."""
        with self._lock:
            return [_job_pb(j) for j in reversed(self._jobs.values())]

    def cancel(self, job_id: str) -> pb.Job:
        """Ask a job to stop (its work stops at its next check); a finished job is unchanged;
        InvalidArgument for a running job that cannot stop part way."""
        with self._lock:
            job = self._find(job_id)
            if job.state in ACTIVE and job.cancel_refusal:
                raise InvalidArgument(job.cancel_refusal)
            if job.state in ACTIVE:
                job.cancel.set()
                job.message = "cancelling: finishing the batch in flight"
            return _job_pb(job)

    def shutdown(self, timeout_s: float) -> None:
        """Cancel every running job and wait up to `timeout_s` for them to stop."""
        with self._lock:
            active = [j for j in self._jobs.values() if j.state in ACTIVE]
            for job in active:
                job.cancel.set()
        deadline = time.monotonic() + timeout_s
        for job in active:
            if job.thread is not None:
                job.thread.join(max(0.0, deadline - time.monotonic()))
            if job.thread is not None and job.thread.is_alive():
                log.warning("%s job %s did not stop within %.1f s", job.kind, job.id, timeout_s)

    def _find(self, job_id: str) -> _Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r} (finished jobs are kept: the last "
                           f"{self._keep_finished})")
        return job

    def _run(self, job: _Job, work: JobWork) -> None:
        with self._lock:
            job.state, job.message = RUNNING, "running"
        log.info("%s job %s started on %s", job.kind, job.id, job.source)
        state, message = SUCCEEDED, ""
        try:
            work(JobContext(job, self._lock))
        except JobCancelled:
            pass
        except (LookalikeError, EmbedderError, OSError) as exc:
            log.warning("%s job %s failed: %s", job.kind, job.id, exc)
            state, message = FAILED, str(exc) or type(exc).__name__
        except Exception as exc:
            log.exception("%s job %s failed", job.kind, job.id)
            state, message = FAILED, f"internal error: {type(exc).__name__}: {exc}"
        with self._lock:
            if state == SUCCEEDED and job.cancel.is_set():
                state = CANCELLED
                message = "cancelled; what it stored before stopping stays"
            job.state = state
            if message:
                job.message = message
            elif job.message in ("running", ""):
                job.message = "done"
            job.finished_at, job.finished = time.time(), time.monotonic()
            self._forget_old()
        log.info("%s job %s %s: %s", job.kind, job.id, job.state, job.message)

    def _forget_old(self) -> None:
        finished = [j.id for j in self._jobs.values() if j.state not in ACTIVE]
        for job_id in finished[:max(0, len(finished) - self._keep_finished)]:
            del self._jobs[job_id]


def _rate(job: _Job) -> tuple[float, float]:
    """Units per second since the start, and the seconds left at that rate (-1: unknown)."""
    end = job.finished or time.monotonic()
    elapsed = end - job.started
    rate = job.done / elapsed if elapsed > 0 else 0.0
    if job.state not in ACTIVE:
        return rate, 0.0
    if job.total <= 0 or rate <= 0:
        return rate, -1.0
    return rate, max(0.0, job.total - job.done) / rate


def _summary_pb(out: pb.Job, summary: Summary | None) -> None:
    if isinstance(summary, IngestSummary):
        out.ingest.CopyFrom(pb.IngestSummary(
            seen=summary.seen, added=summary.added, already_stored=summary.already_stored,
            duplicates=summary.duplicates, seconds=summary.seconds,
            failed=[pb.BadFile(path=f.path, reason=f.reason) for f in summary.failed],
        ))
    elif isinstance(summary, EvalSummary):
        out.evaluation.CopyFrom(pb.EvalSummary(
            dataset=summary.dataset, kind=summary.kind, images=summary.images,
            queries=summary.queries,
            rows=[pb.EvalRow(config=r.config, levers=r.levers, scores=r.scores,
                             pk_curve=list(r.pk_curve), per_class_ap=r.per_class_ap)
                  for r in summary.rows],
        ))
    elif isinstance(summary, TrainSummary):
        out.training.CopyFrom(pb.TrainSummary(
            dataset=summary.dataset, classes=summary.classes, images=summary.images,
            backbone=summary.backbone, loss=summary.loss, bits=summary.bits,
            epochs_planned=summary.epochs_planned,
            epochs=[pb.TrainEpoch(epoch=e.epoch, train_loss=e.train_loss, val_map=e.val_map,
                                  seconds=e.seconds) for e in summary.epochs],
            best_epoch=summary.best_epoch, stopped_early=summary.stopped_early,
            pretrained_map=summary.pretrained_map, finetuned_map=summary.finetuned_map,
            hashed_map=summary.hashed_map, float_map=summary.float_map,
            comparison=summary.comparison, version=summary.version, seconds=summary.seconds,
        ))


def _model_pb(model: ModelInfo) -> pb.ModelInfo:
    return pb.ModelInfo(
        version=model.version, created_at=model.created_at, backbone=model.backbone,
        weights_id=model.weights_id, loss=model.loss, bits=model.bits, metrics=model.metrics,
        trained_on=model.trained_on, size_bytes=model.size_bytes, serving=model.serving,
    )


def _job_pb(job: _Job) -> pb.Job:
    rate, eta = _rate(job)
    out = pb.Job(
        id=job.id, kind=job.kind, state=job.state, source=job.source, done=job.done,
        total=job.total, rate_per_s=rate, eta_s=eta, message=job.message,
        started_at=int(job.started_at), finished_at=int(job.finished_at),
    )
    _summary_pb(out, job.summary)
    return out


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
        return self.registry.start(INGEST, source, runners.ingest(source))

    def StartEvaluation(
        self, request: pb.StartEvaluationRequest, context: grpc.ServicerContext
    ) -> pb.Job:
        """Check the folder and configurations, then evaluate them in the background."""
        runners = self._require_runners()
        folder = str(self._roots.folder(request.folder, "evaluation"))
        self.registry.require_free(EVALUATE)
        work = runners.evaluate(folder, list(request.configs), request.ablation)
        return self.registry.start(EVALUATE, folder, work)

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
        return self.registry.start(TRAIN, folder, runners.train(params))

    def StartRollOut(
        self, request: pb.RollOutRequest, context: grpc.ServicerContext
    ) -> pb.Job:
        """Check the version and the confirmation, then re-index the served collection with
        that model in the background and swap it in."""
        runners = self._require_runners()
        version = request.version.strip()
        if not version:
            raise InvalidArgument("give the model version to roll out (ListModels names them)")
        if not request.confirm:
            raise InvalidArgument(
                f"rolling out {version} rebuilds the served collection with that model and then "
                "serves it: confirm to go ahead"
            )
        self.registry.require_free(ROLLOUT)
        return self.registry.start(
            ROLLOUT, version, runners.rollout(version),
            cancel_refusal=(f"the roll-out to {version} cannot be stopped part way; the current "
                            "collection serves until the new one is complete, and stays for a "
                            "rollback after the swap"))

    def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.ServicerContext
    ) -> pb.ListModelsResponse:
        """The model registry's versions, oldest first."""
        runners = self._require_runners()
        return pb.ListModelsResponse(models=[_model_pb(m) for m in runners.models()])

    def GetJob(
        self, request: pb.GetJobRequest, context: grpc.ServicerContext
    ) -> pb.Job:
        """A job's state, progress and summary."""
        return self.registry.get(request.id)

    def ListJobs(
        self, request: pb.ListJobsRequest, context: grpc.ServicerContext
    ) -> pb.ListJobsResponse:
        """Every job kept, most recent first."""
        return pb.ListJobsResponse(jobs=self.registry.list())

    def CancelJob(
        self, request: pb.CancelJobRequest, context: grpc.ServicerContext
    ) -> pb.Job:
        """Ask a job to stop at its next batch."""
        return self.registry.cancel(request.id)
