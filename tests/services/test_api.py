"""The full lookalike.v1 API against real servers on 127.0.0.1: every RPC and its status codes,
auth, TLS, health, limits, batching, deadlines, shutdown and metrics."""

from __future__ import annotations

import json
import logging
import re
import shutil
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from pydantic import SecretStr

from lookalike.app.compose import (
    blobs_from,
    engine_from,
    pipeline_from,
    query_embedder_from,
    store_from,
)
from lookalike.core.blob_store import BlobStore
from lookalike.core.settings import EmbedServiceSettings, ServerSettings, Settings
from lookalike.core.vector_store import MilvusVectorStore, connect_milvus
from lookalike.embedder.runtime import Embedder
from lookalike.ingestion.sources import folder_items
from lookalike.services.client import ClientError, LookalikeClient, SearchQuery, UpsertItem
from lookalike.services.gen.lookalike.v1 import lookalike_pb2 as pb
from lookalike.services.gen.lookalike.v1 import lookalike_pb2_grpc as pb_grpc
from lookalike.services.remote_embedder import RemoteEmbedder
from lookalike.services.server import RunningServer, start_server
from tests.conftest import encode, free_port, gradient_image, make_settings
from tests.services.certs import self_signed

TOKEN = "s3cret-token"


@dataclass
class Collection:
    settings: Settings
    store: MilvusVectorStore
    blobs: BlobStore
    demo_dir: Path
    embedder: Embedder

    def serve(self, **server: object) -> RunningServer:
        """A server over this collection with these ServerSettings."""
        settings = ServerSettings(host="127.0.0.1", port=0, **server)
        engine = engine_from(self.settings, self.embedder, self.store, self.blobs)
        return start_server(engine, settings)


@pytest.fixture(scope="module")
def collection(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder, demo_dir: Path
) -> Collection:
    """The demo photographs in Milvus Lite and a local blob folder."""
    settings = make_settings(tmp_path_factory.mktemp("api-data"))
    store = store_from(settings, embedder)
    blobs = blobs_from(settings)
    pipeline_from(settings, embedder, store, blobs).run(folder_items(demo_dir), progress=False)
    return Collection(settings, store, blobs, demo_dir, embedder)


@dataclass
class Served:
    running: RunningServer
    client: LookalikeClient
    collection: Collection


@pytest.fixture(scope="module")
def served(collection: Collection) -> Iterator[Served]:
    """A server with token auth and a /metrics port, and a client holding the token."""
    running = collection.serve(tokens=[SecretStr(TOKEN)], metrics_port=free_port())
    try:
        with LookalikeClient(running.address, timeout_s=30, token=TOKEN) as client:
            yield Served(running, client, collection)
    finally:
        running.stop(grace_s=1.0)


def _photo(served: Served, name: str = "animals/chelsea.png") -> bytes:
    return (served.collection.demo_dir / name).read_bytes()


def test_search_by_vector_ranks_like_search_by_image(served: Served) -> None:
    """A raw descriptor query returns the same ranking as the image it was computed from."""
    image = _photo(served)
    vector = served.client.embed([image])[0].vector
    assert vector is not None
    by_image = served.client.search(image=image, top_k=5).hits
    by_vector = served.client.search(vector=vector * 3.0, top_k=5).hits
    assert [h.id for h in by_vector] == [h.id for h in by_image]
    assert by_vector[0].score == pytest.approx(1.0, abs=1e-3)


def test_vector_of_another_dimension_is_refused(served: Served) -> None:
    """A raw vector whose length is not the collection's dim is INVALID_ARGUMENT naming both."""
    with pytest.raises(ClientError) as info:
        served.client.search(vector=np.ones(7, dtype=np.float32))
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "7 dimensions" in info.value.message
    assert f"{served.collection.embedder.dim}-dimensional" in info.value.message


def test_min_score_keeps_only_closer_hits(served: Served) -> None:
    """With min_score, every hit scores above it and fewer hits come back."""
    image = _photo(served)
    everything = served.client.search(image=image, top_k=24).hits
    threshold = everything[3].score
    close = served.client.search(image=image, top_k=24, min_score=threshold).hits
    assert 1 <= len(close) < len(everything)
    assert all(h.score > threshold for h in close)


def test_search_parameters_per_query_reach_the_store(served: Served) -> None:
    """ef and mode travel in SearchRequest: an HNSW ef changes nothing on a tiny collection, an
    unknown mode is INVALID_ARGUMENT, a mode the collection was not built for is
    FAILED_PRECONDITION naming what to do."""
    image = _photo(served)
    plain = served.client.search(image=image, top_k=5).hits
    tuned = served.client.search(image=image, top_k=5, ef=512, mode="ann").hits
    assert [h.id for h in tuned] == [h.id for h in plain]
    with pytest.raises(ClientError) as unknown:
        served.client.search(image=image, mode="fastest")
    assert unknown.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown search mode 'fastest'" in unknown.value.message
    for mode, hint in (("routed", "PARTITION_BY"), ("hash_rerank", "lookalike hash")):
        with pytest.raises(ClientError) as refused:
            served.client.search(image=image, mode=mode)
        assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert hint in refused.value.message
    results = served.client.batch_search([SearchQuery(image=image, mode="fastest"),
                                          SearchQuery(image=image, top_k=2)])
    assert results[0].error_code == "INVALID_ARGUMENT"
    assert results[1].response is not None
    assert len(results[1].response.hits) == 2


def test_search_response_reports_model_time(served: Served) -> None:
    """An image query reports the forward time of its batch, within the server-side time."""
    response = served.client.search(image=_photo(served), top_k=3)
    assert 0 < response.embed_ms <= response.took_ms


def test_batch_search_answers_each_query_in_order(served: Served) -> None:
    """BatchSearch gives one response or error per query, in order; a bad one fails alone."""
    image = _photo(served)
    first = served.client.search(image=image, top_k=1).hits[0]
    results = served.client.batch_search([
        SearchQuery(image=image, top_k=3),
        SearchQuery(image=b"not an image"),
        SearchQuery(image_id=first.id, top_k=2),
        SearchQuery(image_id=42),
        SearchQuery(image=image, top_k=2, ids_only=True),
    ])
    assert [r.error_code for r in results] == ["", "INVALID_ARGUMENT", "", "NOT_FOUND", ""]
    assert results[0].response is not None
    assert results[0].response.hits[0].id == first.id
    assert results[2].response is not None
    assert first.id not in {
        h.id for h in results[2].response.hits}
    assert results[4].response is not None
    assert results[4].response.hits[0].label == ""


def test_upsert_get_delete_round_trip(served: Served) -> None:
    """Upsert stores image, thumbnail and metadata; a second upsert replaces the metadata;
    delete removes the vector and both blobs."""
    client, blobs = served.client, served.collection.blobs
    data = encode(gradient_image(120, 80, seed=101))
    created = client.upsert([UpsertItem(image=data, label="new", tags=("a", "b"),
                                        meta={"camera": "x100"}, source="upload:1")])[0]
    assert created.created
    assert created.image is not None
    image_id = created.image.id
    assert (created.image.width, created.image.height) == (120, 80)
    assert blobs.exists(created.image.blob_key)
    hit = client.search(image=data, top_k=1).hits[0]
    assert (hit.id, hit.label, hit.tags, hit.meta) == (image_id, "new", ("a", "b"), {"camera": "x100"})
    again = client.upsert([UpsertItem(image=data, label="renamed")])[0]
    assert not again.created
    got = client.get([image_id, 7], include_thumbnails=True)
    assert got.missing_ids == [7]
    assert got.images[0].label == "renamed"
    assert got.images[0].thumbnail[:2] == b"\xff\xd8"
    assert client.delete(ids=[image_id, 7]) == [image_id]
    assert client.get([image_id]).missing_ids == [image_id]
    assert not blobs.exists(created.image.blob_key)
    assert not blobs.exists(f"thumbs/{created.image.sha256}.jpg")


def test_delete_by_filter(served: Served) -> None:
    """Delete with a filter removes exactly the matching images."""
    items = [UpsertItem(image=encode(gradient_image(seed=200 + i)), label="doomed") for i in range(3)]
    ids = {r.image.id for r in served.client.upsert(items) if r.image is not None}
    assert len(ids) == 3
    assert set(served.client.delete(filter_expr='label == "doomed"')) == ids
    assert served.client.get(sorted(ids)).images == []


def test_upsert_reports_bad_items_alone(served: Served) -> None:
    """A bad image or bad meta JSON is an error for that item; the good one is stored."""
    good = encode(gradient_image(seed=300))
    results = served.client.upsert([UpsertItem(image=b"junk"), UpsertItem(image=good)])
    assert results[0].image is None
    assert results[0].error.startswith("INVALID_ARGUMENT")
    assert results[1].created
    assert results[1].image is not None
    served.client.delete(ids=[results[1].image.id])


def test_delete_needs_ids_or_filter(served: Served) -> None:
    """Delete with neither ids nor filter is INVALID_ARGUMENT; a bad filter names itself."""
    with pytest.raises(ClientError) as info:
        served.client.delete()
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(ClientError) as info:
        served.client.delete(filter_expr="label = = 1")
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "label = = 1" in info.value.message


class _Recorder(logging.Handler):
    """Keeps every record that reaches it (pymilvus's loggers do not propagate to caplog's)."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _request_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The server's one-line JSON request logs among the captured records."""
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "lookalike.requests"]


def test_bad_filter_is_logged_once_without_a_traceback(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    """A search with a bad filter is INVALID_ARGUMENT; the server logs it once, as its request
    line with code and message, and no traceback or pymilvus ERROR record is logged."""
    pymilvus = logging.getLogger("pymilvus")
    recorder = _Recorder()
    pymilvus.addHandler(recorder)
    caplog.set_level(logging.INFO)
    try:
        with pytest.raises(ClientError) as info:
            served.client.search(image=_photo(served), filter_expr="bad (((")
    finally:
        pymilvus.removeHandler(recorder)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "bad (((" in info.value.message
    assert [r for r in recorder.records if r.levelno >= logging.ERROR] == []
    assert [r for r in (*caplog.records, *recorder.records)
            if r.exc_info or "Traceback" in r.getMessage()] == []
    failed = [line for line in _request_lines(caplog) if line["code"] != "OK"]
    assert len(failed) == 1
    assert failed[0]["request_id"] == info.value.request_id
    assert failed[0]["code"] == "INVALID_ARGUMENT"
    assert failed[0]["error"] == info.value.message


def _echoed_request_id(served: Served, sent: str) -> str:
    """The request id the server sends back for a Stats call whose client sent `sent`."""
    with grpc.insecure_channel(served.running.address) as channel:
        _, call = pb_grpc.CatalogServiceStub(channel).Stats.with_call(
            pb.StatsRequest(), timeout=10,
            metadata=(("authorization", f"Bearer {TOKEN}"), ("x-request-id", sent)),
        )
    return str(dict(call.trailing_metadata())["x-request-id"])


def test_client_request_ids_are_kept_only_when_short_and_plain(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    """A client's short [A-Za-z0-9._:-] request id is logged and echoed as is; a 4 KB one or one
    with other characters is replaced by a generated id, and the request line says so."""
    caplog.set_level(logging.INFO, logger="lookalike.requests")
    plain = "job-42.retry:1_" + "x" * 113
    assert len(plain) == 128
    assert _echoed_request_id(served, plain) == plain
    replaced = {sent: _echoed_request_id(served, sent)
                for sent in ("r" * 4096, "x" * 129, "two words", "id;rm -rf", "<b>id</b>")}
    for sent, echoed in replaced.items():
        assert echoed != sent
        assert len(echoed) == 32
        assert echoed.isalnum()
    lines = {line["request_id"]: line for line in _request_lines(caplog)}
    assert set(lines) == {plain, *replaced.values()}
    assert "client_request_id_replaced" not in lines[plain]
    assert all(lines[echoed]["client_request_id_replaced"] for echoed in replaced.values())
    assert all(len(r.getMessage()) < 1000 for r in caplog.records)


def test_stats_reports_count_model_and_index(served: Served) -> None:
    """Stats gives the count, the model spec and the index type and params."""
    stats = served.client.stats()
    assert stats.count == served.collection.store.count() >= 20
    assert stats.model.backbone == "efficientnet_lite0"
    assert stats.model.dim == served.collection.embedder.dim
    assert stats.index_type == "HNSW"
    assert stats.index_params["M"] == "16"
    assert stats.metric_type == "IP"
    assert stats.physical_collection.startswith(stats.collection + "__")


@pytest.mark.parametrize("token", ["", "wrong"])
def test_calls_without_a_valid_token_are_unauthenticated(served: Served, token: str) -> None:
    """A missing or wrong bearer token is UNAUTHENTICATED on every service; health stays open."""
    with LookalikeClient(served.running.address, timeout_s=10, token=token) as client:
        for call in (lambda: client.stats(), lambda: client.embed([b""]),
                     lambda: client.search(image_id=1)):
            with pytest.raises(ClientError) as info:
                call()
            assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert client.healthy("lookalike.v1.SearchService")


def test_metrics_scrape_has_expected_series(served: Served) -> None:
    """/metrics has request counts and latencies per method and code, batch sizes, queue depth,
    model load time and which model, engine and precision serve."""
    served.client.search(image=_photo(served), top_k=1)
    with pytest.raises(ClientError):
        served.client.search(image_id=42)
    port = served.running.metrics_port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    search = 'method="/lookalike.v1.SearchService/Search"'
    assert f'lookalike_grpc_requests_total{{code="OK",{search}}}' in text
    assert f'lookalike_grpc_requests_total{{code="NOT_FOUND",{search}}}' in text
    assert f'lookalike_grpc_request_seconds_bucket{{code="OK",le="0.1",{search}}}' in text
    assert "lookalike_embed_batch_size_count" in text
    assert "lookalike_embed_queue_depth 0.0" in text
    load = [line for line in text.splitlines() if line.startswith("lookalike_model_load_seconds ")]
    assert load
    assert float(load[0].split()[1]) >= 0
    # Which engine produced these numbers is a label of the model series.
    assert re.search(r'^lookalike_model_info\{backbone="[a-z0-9_]+",device="cpu",'
                     r'engine="(torch|onnxruntime)",precision="fp32"\} 1\.0$', text, re.MULTILINE)


def test_oversized_message_is_resource_exhausted(collection: Collection) -> None:
    """A request over the configured max message size is refused with RESOURCE_EXHAUSTED."""
    running = collection.serve(max_message_mb=1)
    try:
        with LookalikeClient(running.address, timeout_s=10) as client, \
                pytest.raises(ClientError) as info:
            client.search(image=b"\xff" * (2 * 1024 * 1024))
    finally:
        running.stop(grace_s=1.0)
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_full_queue_and_expired_deadlines(collection: Collection, demo_dir: Path) -> None:
    """With the queue full, a call is refused at once (RESOURCE_EXHAUSTED); a call whose deadline
    passes while queued gets DEADLINE_EXCEEDED and never reaches the model."""
    running = collection.serve(batch_queue_size=1, batch_max_wait_ms=1500)
    image = (demo_dir / "space" / "moon.png").read_bytes()
    try:
        with LookalikeClient(running.address, timeout_s=10) as client, \
                ThreadPoolExecutor(1) as pool:
            with pytest.raises(ClientError) as expired:
                client.search(image=image, timeout_s=0.3)
            assert expired.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
            time.sleep(1.5)  # the batcher has dropped the expired job
            batches = running.metrics.registry.get_sample_value("lookalike_embed_batch_size_count")
            assert batches == 0
            waiting = pool.submit(client.search, image=image, top_k=1)
            time.sleep(0.6)
            started = time.perf_counter()
            with pytest.raises(ClientError) as refused:
                client.search(image=image, top_k=1)
            assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert time.perf_counter() - started < 1.0  # well before the 1.5 s batch wait
            assert "queue is full" in refused.value.message
            assert waiting.result().hits
    finally:
        running.stop(grace_s=1.0)


def test_concurrent_requests_are_coalesced_into_batches(collection: Collection,
                                                        demo_dir: Path) -> None:
    """Eight concurrent single-image searches are answered by fewer, larger model batches."""
    running = collection.serve(batch_max_wait_ms=1000, batch_max_size=8)
    images = [p.read_bytes() for p in sorted(demo_dir.rglob("*.png"))[:8]]
    try:
        with LookalikeClient(running.address, timeout_s=30) as client, ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda data: client.search(image=data, top_k=1), images))
    finally:
        running.stop(grace_s=1.0)
    assert all(r.hits[0].score == pytest.approx(1.0, abs=1e-3) for r in results)
    registry = running.metrics.registry
    batches = registry.get_sample_value("lookalike_embed_batch_size_count")
    images_embedded = registry.get_sample_value("lookalike_embed_batch_size_sum")
    assert images_embedded == 8
    assert batches is not None
    assert batches <= 3


def test_graceful_shutdown_finishes_in_flight_calls(collection: Collection, demo_dir: Path) -> None:
    """stop() lets a call already in progress finish; new calls are refused afterwards."""
    running = collection.serve(batch_max_wait_ms=1500)
    image = (demo_dir / "space" / "moon.png").read_bytes()
    with LookalikeClient(running.address, timeout_s=10) as client, ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(client.search, image=image, top_k=1)
        time.sleep(0.6)
        stopper = threading.Thread(target=running.stop, kwargs={"grace_s": 5.0})
        stopper.start()
        assert in_flight.result().hits
        stopper.join()
        with pytest.raises(ClientError) as info:
            client.search(image=image, top_k=1, timeout_s=2)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE


def test_tls_with_a_self_signed_certificate(collection: Collection, tmp_path: Path) -> None:
    """With cert and key the server speaks TLS only: a client trusting the cert searches,
    a plaintext client cannot."""
    cert, key = self_signed(tmp_path)
    running = collection.serve(tls_cert=str(cert), tls_key=str(key), tokens=[SecretStr(TOKEN)])
    try:
        assert running.tls
        with LookalikeClient(running.address, timeout_s=10, token=TOKEN,
                             tls_ca=str(cert)) as client:
            assert client.stats().count > 0
            assert client.healthy()
        with LookalikeClient(running.address, timeout_s=3, token=TOKEN) as plain, \
                pytest.raises(ClientError) as info:
            plain.stats()
        assert info.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        running.stop(grace_s=1.0)


def test_health_follows_the_stores(tmp_path: Path, embedder: Embedder) -> None:
    """Health turns NOT_SERVING when the blob store or Milvus goes away, and back when it returns."""
    settings = make_settings(tmp_path / "data")
    milvus = connect_milvus(settings.milvus_uri, settings.milvus)
    store = MilvusVectorStore.open(milvus, "images", embedder.spec.to_dict(), embedder.dim,
                                   settings.milvus)
    blobs = blobs_from(settings)
    running = start_server(engine_from(settings, embedder, store, blobs),
                           ServerSettings(host="127.0.0.1", port=0, health_interval_s=0.1))

    def wait_for(client: LookalikeClient, service: str, serving: bool) -> None:
        deadline = time.monotonic() + 10
        while client.healthy(service) != serving:
            assert time.monotonic() < deadline, f"{service or 'server'} never became {serving}"
            time.sleep(0.05)

    try:
        with LookalikeClient(running.address, timeout_s=5) as client:
            wait_for(client, "lookalike.v1.SearchService", True)
            shutil.rmtree(settings.data_dir / "blobs")
            wait_for(client, "lookalike.v1.CatalogService", False)
            wait_for(client, "", False)
            assert client.healthy("lookalike.v1.EmbedService")
            (settings.data_dir / "blobs").mkdir()
            wait_for(client, "lookalike.v1.SearchService", True)
            milvus.close()
            wait_for(client, "lookalike.v1.SearchService", False)
            wait_for(client, "lookalike.v1.CatalogService", False)
    finally:
        running.stop(grace_s=1.0)


def test_search_through_a_remote_embed_service(collection: Collection) -> None:
    """With embed_service.address set, the API server embeds through that server's EmbedService
    and answers like in process."""
    gpu_node = collection.serve(tokens=[SecretStr(TOKEN)])
    try:
        settings = collection.settings.model_copy(update={"embed_service": EmbedServiceSettings(
            address=gpu_node.address, token=SecretStr(TOKEN))})
        remote = query_embedder_from(settings)
        assert isinstance(remote, RemoteEmbedder)
        assert remote.spec == collection.embedder.spec
        engine = engine_from(collection.settings, remote, collection.store, collection.blobs)
        api = start_server(engine, ServerSettings(host="127.0.0.1", port=0))
        try:
            image = (collection.demo_dir / "objects" / "coffee.png").read_bytes()
            with LookalikeClient(api.address, timeout_s=10) as client:
                hits = client.search(image=image, top_k=3).hits
                assert client.healthy("lookalike.v1.SearchService")
                bad = client.embed([b"junk"])[0]
            # The predicted category crosses the wire too (a Catalog upsert partitions by it).
            local = collection.embedder.embed_bytes([image])[0]
            assert local.category
            assert remote.embed_bytes([image])[0].category == local.category
            assert hits[0].score == pytest.approx(1.0, abs=1e-3)
            assert hits[0].label == "objects"
            assert bad.vector is None
            assert "not a recognised image" in bad.error
        finally:
            api.stop(grace_s=1.0)
            remote.close()
    finally:
        gpu_node.stop(grace_s=1.0)
