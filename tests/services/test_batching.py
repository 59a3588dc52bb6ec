"""The dynamic batcher: slices per job in order, batch limits, queue bound, deadlines, and
batching by bytes for an embedder that decodes on its device."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from lookalike.embedder.runtime import Embedder, EmbedderConfig
from lookalike.services.batching import BatchedEmbedder, DynamicBatcher
from lookalike.services.callctx import call_deadline
from lookalike.services.errors import DeadlineExceeded, Overloaded
from tests.conftest import encode, gradient_image


def test_each_job_gets_its_own_results_in_order() -> None:
    """Jobs submitted from many threads get exactly their own items' results, in order."""
    batches: list[int] = []

    def double(items: list[int]) -> list[int]:
        batches.append(len(items))
        return [2 * i for i in items]

    batcher: DynamicBatcher[int, int] = DynamicBatcher(
        double, max_batch=8, max_wait_s=0.05, max_queued=100)
    try:
        with ThreadPoolExecutor(12) as pool:
            jobs = [[10 * j + k for k in range(j % 3 + 1)] for j in range(12)]
            results = list(pool.map(lambda items: batcher.submit(items)[0], jobs))
    finally:
        batcher.close()
    assert results == [[2 * i for i in job] for job in jobs]
    assert max(batches) <= 8
    assert len(batches) < len(jobs)


def test_a_full_queue_refuses_at_once() -> None:
    """Items beyond the queue bound are refused immediately with Overloaded."""
    release = threading.Event()

    def slow(items: list[int]) -> list[int]:
        release.wait(5)
        return items

    batcher: DynamicBatcher[int, int] = DynamicBatcher(
        slow, max_batch=2, max_wait_s=0.0, max_queued=2)
    try:
        with ThreadPoolExecutor(2) as pool:
            running = pool.submit(batcher.submit, [1, 2])  # taken by the worker, which blocks
            time.sleep(0.1)
            queued = pool.submit(batcher.submit, [3, 4])  # fills the queue
            time.sleep(0.1)
            started = time.perf_counter()
            with pytest.raises(Overloaded):
                batcher.submit([5])
            assert time.perf_counter() - started < 0.1
            release.set()
            assert running.result()[0] == [1, 2]
            assert queued.result()[0] == [3, 4]
    finally:
        release.set()
        batcher.close()


def test_an_expired_job_never_reaches_the_model() -> None:
    """A job whose deadline passes while it waits raises DeadlineExceeded and is skipped."""
    seen: list[int] = []

    def record(items: list[int]) -> list[int]:
        seen.extend(items)
        return items

    batcher: DynamicBatcher[int, int] = DynamicBatcher(
        record, max_batch=4, max_wait_s=0.3, max_queued=8)
    token = call_deadline.set(time.monotonic() + 0.05)
    try:
        with pytest.raises(DeadlineExceeded):
            batcher.submit([1])
    finally:
        call_deadline.reset(token)
    assert batcher.submit([2])[0] == [2]
    batcher.close()
    assert seen == [2]


def test_an_embedder_that_decodes_on_its_device_is_batched_by_bytes() -> None:
    """With tensor decoding, concurrent callers' encoded images reach the embedder together
    (one batched decode), and each caller gets its own outcomes in order."""
    embedder = Embedder(EmbedderConfig(backbone="mobilenet_v2", threads=2, input_size=64,
                                       decoder="tensor"))
    batched = BatchedEmbedder(embedder, max_batch=8, max_wait_s=0.05, max_queued=64)
    jobs = [[encode(gradient_image(seed=10 * j + k)) for k in range(2)] + [b"bad"]
            for j in range(4)]
    try:
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(batched.embed_bytes, jobs))
    finally:
        batched.close()
    assert [[o.ok for o in r] for r in results] == [[True, True, False]] * 4
    alone = embedder.embed_bytes(jobs[2])
    assert alone[1].vector is not None
    assert results[2][1].vector is not None
    assert float(alone[1].vector @ results[2][1].vector) > 0.9999


def test_a_job_behind_a_running_batch_reports_its_wait() -> None:
    """The third number of a result is the time the job queued before its batch started."""
    started = threading.Event()

    def slow(items: list[int]) -> list[int]:
        started.set()
        time.sleep(0.3)
        return items

    batcher: DynamicBatcher[int, int] = DynamicBatcher(
        slow, max_batch=1, max_wait_s=0.0, max_queued=10)
    try:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(batcher.submit, [1])
            assert started.wait(5)
            second = pool.submit(batcher.submit, [2])
            (_, first_ms, first_wait), (_, _, second_wait) = first.result(), second.result()
    finally:
        batcher.close()
    assert first_ms >= 250
    assert first_wait < 100
    assert second_wait >= 150
