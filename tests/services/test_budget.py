"""The byte budget for requests in progress: unit behaviour, and a real server that answers a
request over it RESOURCE_EXHAUSTED before parsing it, while smaller calls still go through."""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest

from lookalike.app.compose import blobs_from, engine_from, store_from
from lookalike.core.settings import ServerSettings
from lookalike.embedder.runtime import Embedder, EmbedOutcome
from lookalike.embedder.spec import EmbedderSpec
from lookalike.services.budget import MB, ByteBudget, MemoryReturner, _Held
from lookalike.services.gen.lookalike.v1 import lookalike_pb2 as pb
from lookalike.services.gen.lookalike.v1 import lookalike_pb2_grpc as pb_grpc
from lookalike.services.server import start_server
from tests.conftest import make_settings


def test_the_budget_refuses_what_does_not_fit_and_trims_after_a_burst() -> None:
    """take() fails past the limit; give_back frees room; the idle hook runs only once enough
    bytes came and went, and only when nothing is held."""
    idle: list[int] = []
    budget = ByteBudget(10, on_idle=lambda: idle.append(budget.held), trim_after=12)
    assert budget.take(6)
    assert budget.take(4)
    assert not budget.take(1)
    budget.give_back(6)
    assert budget.take(5)
    budget.give_back(4)
    assert idle == []
    budget.give_back(5)
    assert (budget.held, idle) == (0, [0])
    assert budget.take(3)
    budget.give_back(3)
    assert idle == [0]


def test_a_request_dropped_unanswered_gives_its_bytes_back() -> None:
    """A held request that is never answered releases its share when it is dropped; one
    released by its call gives its bytes back once, not again when dropped."""
    budget = ByteBudget(10)
    assert budget.take(7)
    held = _Held(object(), 7, budget)
    del held
    gc.collect()
    assert budget.held == 0
    assert budget.take(4)
    answered = _Held(object(), 4, budget)
    answered.release()
    answered.release()
    del answered
    gc.collect()
    assert budget.held == 0


def test_the_memory_returner_trims_in_the_background() -> None:
    """Several requests before the thread runs make at least one trim, and stop() ends it."""
    done = threading.Event()
    returner = MemoryReturner(trim=done.set)
    try:
        returner.request()
        returner.request()
        assert done.wait(5)
    finally:
        returner.stop()
    assert returner.trims >= 1


class GatedEmbedder:
    """The real embedder behind a gate: each call waits until the test opens it, so requests
    stay in progress as long as the test needs."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)

    @property
    def spec(self) -> EmbedderSpec:
        """The real embedder's spec."""
        return self.inner.spec

    def embed_bytes(self, blobs: Sequence[bytes]) -> list[EmbedOutcome]:
        """The real outcomes, once the gate opens."""
        self.entered.release()
        self.gate.wait(60)
        return self.inner.embed_bytes(blobs)


def test_a_server_refuses_uploads_past_its_budget(tmp_path: Path, embedder: Embedder) -> None:
    """With an 8 MB budget and two 3 MB uploads in progress, a third is RESOURCE_EXHAUSTED at
    once naming the setting, a small call still succeeds, and the budget is empty after."""
    settings = make_settings(tmp_path / "data")
    store = store_from(settings, embedder)
    blobs = blobs_from(settings)
    gated = GatedEmbedder(embedder)
    running = start_server(
        engine_from(settings, embedder, store, blobs).with_embedder(gated),
        ServerSettings(host="127.0.0.1", port=0, max_message_mb=4, inflight_budget_mb=8,
                       batching=False))
    upload = pb.EmbedRequest(images=[os.urandom(3 * MB)])
    channel = grpc.insecure_channel(running.address, options=[
        ("grpc.max_send_message_length", 8 * MB)])
    stub = pb_grpc.EmbedServiceStub(channel)
    answers: list[Any] = []
    threads = [threading.Thread(target=lambda: answers.append(stub.Embed(upload, timeout=60)))
               for _ in range(2)]
    try:
        for thread in threads:
            thread.start()
        for _ in threads:
            assert gated.entered.acquire(timeout=30)
        assert running.budget is not None
        assert running.budget.held >= 6 * MB
        with pytest.raises(grpc.RpcError) as refused:
            stub.Embed(upload, timeout=10)
        error: Any = refused.value
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "LOOKALIKE_SERVER__INFLIGHT_BUDGET_MB" in error.details()
        stats = pb_grpc.CatalogServiceStub(channel).Stats(pb.StatsRequest(), timeout=10)
        assert stats.count == 0
        gated.gate.set()
        for thread in threads:
            thread.join(60)
        assert [r.results[0].WhichOneof("result") for r in answers] == ["error", "error"]
        assert running.budget.held == 0
    finally:
        gated.gate.set()
        channel.close()
        running.stop(grace_s=1.0)


def test_a_budget_below_the_largest_message_is_a_settings_error() -> None:
    """A budget that could not hold one request of the largest size is refused when the
    settings are read."""
    with pytest.raises(ValueError, match="inflight_budget_mb"):
        ServerSettings(max_message_mb=64, inflight_budget_mb=32)
