"""Background jobs, whatever their work: a registry that runs each in a thread (one per kind at
a time), keeps the last finished ones, and hands out snapshots; the context running work
reports progress through and polls for cancellation. It knows nothing of what a job does or of
the API that exposes it."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from lookalike.core.errors import InvalidArgument, LookalikeError, NotFound
from lookalike.embedder.errors import EmbedderError
from lookalike.services.errors import Overloaded
from lookalike.services.job_summaries import EvalSummary, IngestSummary, TrainSummary

log = logging.getLogger("lookalike.jobs")

KEEP_FINISHED = 50
QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    "queued", "running", "succeeded", "failed", "cancelled")
ACTIVE = (QUEUED, RUNNING)

Summary = IngestSummary | EvalSummary | TrainSummary


class JobCancelled(Exception):
    """Raised by `JobContext.raise_if_cancelled` to stop a job's work where it stands."""


class JobBusy(Overloaded):
    """A job of the same kind is already running."""


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


@dataclass(frozen=True, slots=True)
class JobSnapshot:
    """A job as it was when asked: what it runs on, how far it got, and its summary so far."""

    id: str
    kind: str
    source: str
    state: str
    message: str
    # Units done and expected (0: unknown), and seconds run (until now, or until it ended).
    done: int
    total: int
    elapsed_s: float
    # Wall-clock times (0.0 while it has not finished).
    started_at: float
    finished_at: float
    summary: Summary | None

    @property
    def rate_per_s(self) -> float:
        """Units per second since the start."""
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float:
        """Seconds left at the rate so far: 0 once it stopped, -1 when unknown."""
        if self.state not in ACTIVE:
            return 0.0
        rate = self.rate_per_s
        if self.total <= 0 or rate <= 0:
            return -1.0
        return max(0.0, self.total - self.done) / rate


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


def _snapshot(job: _Job) -> JobSnapshot:
    return JobSnapshot(
        id=job.id, kind=job.kind, source=job.source, state=job.state, message=job.message,
        done=job.done, total=job.total,
        elapsed_s=(job.finished or time.monotonic()) - job.started,
        started_at=job.started_at, finished_at=job.finished_at, summary=job.summary,
    )


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

    def start(self, kind: str, source: str, work: JobWork, *,
              cancel_refusal: str = "") -> JobSnapshot:
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
            return _snapshot(job)

    def get(self, job_id: str) -> JobSnapshot:
        """The job as it is now; NotFound for an unknown (or long forgotten) id."""
        with self._lock:
            return _snapshot(self._find(job_id))

    def list(self) -> list[JobSnapshot]:
        """Every job kept, most recent first."""
        with self._lock:
            return [_snapshot(j) for j in reversed(self._jobs.values())]

    def cancel(self, job_id: str) -> JobSnapshot:
        """Ask a job to stop (its work stops at its next check); a finished job is unchanged;
        InvalidArgument for a running job that cannot stop part way."""
        with self._lock:
            job = self._find(job_id)
            if job.state in ACTIVE and job.cancel_refusal:
                raise InvalidArgument(job.cancel_refusal)
            if job.state in ACTIVE:
                job.cancel.set()
                job.message = "cancelling: finishing the batch in flight"
            return _snapshot(job)

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
