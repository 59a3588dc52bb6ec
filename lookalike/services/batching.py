"""Dynamic batching: concurrent embedding requests are coalesced into model batches.

One worker thread takes queued jobs in arrival order until the batch holds `max_batch` items or
the oldest job has waited `max_wait_s`, runs the model once, and hands each job its own slice.
The queue is bounded in items (memory bounded): a job that does not fit is refused at once with
`Overloaded`. A job whose caller's deadline has passed is dropped before it reaches the model.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from lookalike.embedder.errors import ImageError
from lookalike.embedder.runtime import Embedder, EmbedOutcome
from lookalike.embedder.spec import EmbedderSpec
from lookalike.services.callctx import call_deadline, forward_ms, queue_ms
from lookalike.services.errors import DeadlineExceeded, Overloaded
from lookalike.services.metrics import ServerMetrics
from lookalike.services.search import QueryEmbedder

T = TypeVar("T")
R = TypeVar("R")

@dataclass(slots=True)
class _Job(Generic[T, R]):
    items: list[T]
    deadline: float | None
    enqueued: float
    future: Future[tuple[list[R], float, float]] = field(default_factory=Future)


class DynamicBatcher(Generic[T, R]):
    """Coalesces `submit` calls from many threads into calls of `run_batch` on one thread."""

    def __init__(
        self,
        run_batch: Callable[[list[T]], list[R]],
        *,
        max_batch: int,
        max_wait_s: float,
        max_queued: int,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self._run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queued = max_queued
        self._metrics = metrics
        self._jobs: deque[_Job[T, R]] = deque()
        self._queued = 0
        self._closed = False
        self._cond = threading.Condition()
        self._worker = threading.Thread(target=self._loop, name="embed-batcher", daemon=True)
        self._worker.start()

    @property
    def queued(self) -> int:
        """Items waiting for the model."""
        return self._queued

    def submit(self, items: Sequence[T]) -> tuple[list[R], float, float]:
        """Results for `items` in order, the forward time (ms) of the batch that ran them, and
        how long (ms) they waited in the queue before that batch started.

        Raises Overloaded when the queue cannot take them, DeadlineExceeded when the call's
        deadline (`call_deadline`) passes first.
        """
        if not items:
            return [], 0.0, 0.0
        deadline = call_deadline.get()
        job: _Job[T, R] = _Job(list(items), deadline, time.monotonic())
        with self._cond:
            if self._closed:
                raise Overloaded("the server is shutting down")
            if self._queued + len(items) > self.max_queued:
                raise Overloaded(
                    f"embedding queue is full ({self._queued} of {self.max_queued} images waiting);"
                    " retry with backoff"
                )
            self._jobs.append(job)
            self._queued += len(items)
            self._set_depth()
            self._cond.notify_all()
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            return job.future.result(timeout=timeout)
        except FutureTimeout:
            job.future.cancel()
            raise DeadlineExceeded("deadline passed while waiting for the model") from None

    def close(self) -> None:
        """Run what is queued, then stop the worker."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._worker.join()

    def _set_depth(self) -> None:
        if self._metrics is not None:
            self._metrics.queue_depth.set(self._queued)

    def _take(self) -> list[_Job[T, R]] | None:
        """The next batch of jobs, waiting for it to fill; None once closed and drained."""
        with self._cond:
            while not self._jobs and not self._closed:
                self._cond.wait()
            if not self._jobs:
                return None
            flush_at = self._jobs[0].enqueued + self.max_wait_s
            while self._queued < self.max_batch and not self._closed:
                remaining = flush_at - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            taken = [self._jobs.popleft()]
            size = len(taken[0].items)
            while self._jobs and size + len(self._jobs[0].items) <= self.max_batch:
                size += len(self._jobs[0].items)
                taken.append(self._jobs.popleft())
            self._queued -= size
            self._set_depth()
            return taken

    def _loop(self) -> None:
        while (taken := self._take()) is not None:
            now = time.monotonic()
            live = []
            for job in taken:
                if job.deadline is not None and job.deadline <= now:
                    job.future.cancel()
                if job.future.set_running_or_notify_cancel():
                    live.append(job)
            if not live:
                continue
            items = [item for job in live for item in job.items]
            started = time.perf_counter()
            began = time.monotonic()
            try:
                results = self._run_batch(items)
            except BaseException as exc:
                for job in live:
                    job.future.set_exception(exc)
                continue
            seconds = time.perf_counter() - started
            if self._metrics is not None:
                self._metrics.batch_size.observe(len(items))
                self._metrics.forward_seconds.observe(seconds)
            start = 0
            for job in live:
                job.future.set_result((results[start:start + len(job.items)], seconds * 1000.0,
                                       (began - job.enqueued) * 1000.0))
                start += len(job.items)


class BatchedEmbedder:
    """A QueryEmbedder whose model calls go through a DynamicBatcher.

    Over an in-process Embedder that decodes with PIL, images are decoded in the calling threads
    (in parallel) and only the forward pass is batched; over one that decodes on its device
    (nvJPEG, batched) or any other embedder (a remote EmbedService) the encoded bytes are batched.
    """

    def __init__(
        self,
        inner: QueryEmbedder,
        *,
        max_batch: int,
        max_wait_s: float,
        max_queued: int,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self.inner = inner
        # Each image's descriptor and predicted category (a Catalog upsert may partition by it).
        self._local: DynamicBatcher[Image.Image, tuple[NDArray[np.float32], str]] | None = None
        self._remote: DynamicBatcher[bytes, EmbedOutcome] | None = None
        if isinstance(inner, Embedder) and not inner.decodes_on_device:
            model = inner
            self._local = DynamicBatcher(
                lambda images: list(zip(*model.embed_images_with_categories(images), strict=True)),
                max_batch=max_batch, max_wait_s=max_wait_s, max_queued=max_queued, metrics=metrics,
            )
        else:
            self._remote = DynamicBatcher(
                inner.embed_bytes,
                max_batch=max_batch, max_wait_s=max_wait_s, max_queued=max_queued, metrics=metrics,
            )

    @property
    def spec(self) -> EmbedderSpec:
        """The inner embedder's model spec."""
        return self.inner.spec

    def embed_bytes(self, blobs: Sequence[bytes]) -> list[EmbedOutcome]:
        """One outcome per encoded image, in order; sets `forward_ms` and `queue_ms` for the
        caller."""
        if self._remote is not None:
            outcomes, ms, waited = self._remote.submit(blobs)
            forward_ms.set(ms)
            queue_ms.set(waited)
            return outcomes
        assert self._local is not None
        assert isinstance(self.inner, Embedder)
        decoded: list[Image.Image | ImageError] = []
        for data in blobs:
            try:
                decoded.append(self.inner.decode(data))
            except ImageError as exc:
                decoded.append(exc)
        vectors, ms, waited = self._local.submit(
            [im for im in decoded if isinstance(im, Image.Image)])
        forward_ms.set(ms)
        queue_ms.set(waited)
        rows = iter(vectors)
        outcomes = []
        for item in decoded:
            if isinstance(item, ImageError):
                outcomes.append(EmbedOutcome(error=item))
            else:
                vector, category = next(rows)
                outcomes.append(EmbedOutcome(vector=vector, category=category))
        return outcomes

    def close(self) -> None:
        """Finish queued work and stop the worker."""
        for batcher in (self._local, self._remote):
            if batcher is not None:
                batcher.close()
