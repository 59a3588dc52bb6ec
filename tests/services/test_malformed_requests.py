"""Malformed request fields over a real gRPC server: each is the caller's error (INVALID_ARGUMENT,
OUT_OF_RANGE or RESOURCE_EXHAUSTED, or the item's own error in a batch), never INTERNAL, never
UNAVAILABLE (which tells a caller to retry), and nothing stored changes."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from lookalike.app.compose import blobs_from, engine_from, pipeline_from, store_from
from lookalike.app.jobs import job_runners_from
from lookalike.core.settings import ServerSettings
from lookalike.core.vector_store import MilvusVectorStore
from lookalike.embedder.runtime import Embedder
from lookalike.ingestion.sources import folder_items
from lookalike.services.gen.lookalike.v1 import lookalike_pb2 as pb
from lookalike.services.gen.lookalike.v1 import lookalike_pb2_grpc as pb_grpc
from lookalike.services.server import start_server
from tests.conftest import encode, gradient_image, make_settings

CALLER_ERRORS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE,
                 grpc.StatusCode.RESOURCE_EXHAUSTED}
CALLER_ITEM_CODES = {code.name for code in CALLER_ERRORS}
UINT32_MAX = 2**32 - 1
NAN, INF = float("nan"), float("inf")


@dataclass
class Stubs:
    """Raw stubs of every service (the typed client checks some fields itself), the store, and
    the dimension of its vectors."""

    search: pb_grpc.SearchServiceStub
    embed: pb_grpc.EmbedServiceStub
    catalog: pb_grpc.CatalogServiceStub
    admin: pb_grpc.AdminServiceStub
    jobs: pb_grpc.JobServiceStub
    store: MilvusVectorStore
    dim: int
    root: Path


@pytest.fixture(scope="module")
def stubs(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder,
          demo_dir: Path) -> Iterator[Stubs]:
    """The demo photographs served with job roots, and stubs of every service."""
    settings = make_settings(tmp_path_factory.mktemp("malformed-data"))
    store = store_from(settings, embedder)
    blobs = blobs_from(settings)
    pipeline_from(settings, embedder, store, blobs).run(folder_items(demo_dir), progress=False)
    root = tmp_path_factory.mktemp("malformed-root")
    running = start_server(
        engine_from(settings, embedder, store, blobs),
        ServerSettings(host="127.0.0.1", port=0, job_roots=[str(root)]),
        jobs=job_runners_from(settings, embedder, store, blobs))
    channel = grpc.insecure_channel(running.address, options=[
        ("grpc.max_send_message_length", 64 * 1024 * 1024)])
    try:
        yield Stubs(pb_grpc.SearchServiceStub(channel), pb_grpc.EmbedServiceStub(channel),
                    pb_grpc.CatalogServiceStub(channel), pb_grpc.AdminServiceStub(channel),
                    pb_grpc.JobServiceStub(channel), store, embedder.spec.dim, root)
    finally:
        channel.close()
        running.stop(grace_s=1.0)


def _image() -> bytes:
    return encode(gradient_image(seed=3))


def _vector(dim: int, value: float = 0.1) -> pb.Embedding:
    return pb.Embedding(values=[value] * dim)


Call = Callable[["Stubs"], Any]

# name -> the call; each must fail with a caller's error.
REFUSED: dict[str, Call] = {
    "search without a query": lambda s: s.search.Search(pb.SearchRequest(top_k=3)),
    "search top_k above the limit": lambda s: s.search.Search(
        pb.SearchRequest(id=1, top_k=UINT32_MAX)),
    "search vector of NaN": lambda s: s.search.Search(
        pb.SearchRequest(vector=_vector(s.dim, NAN), top_k=3)),
    "search vector of infinity": lambda s: s.search.Search(
        pb.SearchRequest(vector=_vector(s.dim, INF), top_k=3)),
    "search vector of zeros": lambda s: s.search.Search(
        pb.SearchRequest(vector=_vector(s.dim, 0.0), top_k=3)),
    "search empty vector": lambda s: s.search.Search(
        pb.SearchRequest(vector=pb.Embedding(values=[]), top_k=3)),
    "search vector of another size": lambda s: s.search.Search(
        pb.SearchRequest(vector=_vector(s.dim + 1), top_k=3)),
    "search empty image": lambda s: s.search.Search(pb.SearchRequest(image=b"", top_k=3)),
    "search text as image": lambda s: s.search.Search(
        pb.SearchRequest(image=b"not an image", top_k=3)),
    "search unbalanced filter": lambda s: s.search.Search(
        pb.SearchRequest(image=_image(), top_k=3, filter="label == (((")),
    "search filter on an unknown field": lambda s: s.search.Search(
        pb.SearchRequest(image=_image(), top_k=3, filter="no_such_field > 3")),
    "search filter nested 10,000 deep": lambda s: s.search.Search(
        pb.SearchRequest(image=_image(), top_k=3, filter="(" * 10_000 + "id > 0" + ")" * 10_000)),
    "search unknown mode": lambda s: s.search.Search(
        pb.SearchRequest(image=_image(), top_k=3, mode="bogus")),
    "search ef zero": lambda s: s.search.Search(pb.SearchRequest(image=_image(), top_k=3, ef=0)),
    "search ef huge": lambda s: s.search.Search(
        pb.SearchRequest(image=_image(), top_k=3, ef=UINT32_MAX)),
    "search nprobe huge": lambda s: s.search.Search(
        pb.SearchRequest(image=_image(), top_k=3, nprobe=UINT32_MAX)),
    "search rerank factor huge": lambda s: s.search.Search(
        pb.SearchRequest(image=_image(), top_k=3, rerank_factor=UINT32_MAX)),
    "search route_top_n huge": lambda s: s.search.Search(
        pb.SearchRequest(image=_image(), top_k=3, route_top_n=UINT32_MAX)),
    "search qe_n huge": lambda s: s.search.Search(
        pb.SearchRequest(image=_image(), top_k=3, qe_n=UINT32_MAX)),
    "search min_score NaN": lambda s: s.search.Search(
        pb.SearchRequest(image=_image(), top_k=3, min_score=NAN)),
    "delete with neither ids nor filter": lambda s: s.catalog.Delete(pb.DeleteRequest()),
    "delete with a bad filter": lambda s: s.catalog.Delete(pb.DeleteRequest(filter="id in [")),
    "list offset huge": lambda s: s.catalog.List(pb.ListRequest(offset=UINT32_MAX, limit=10)),
    "list limit huge": lambda s: s.catalog.List(pb.ListRequest(limit=UINT32_MAX)),
    "list bad filter": lambda s: s.catalog.List(pb.ListRequest(filter="(((", limit=3)),
    "count labels bad filter": lambda s: s.catalog.CountLabels(
        pb.CountLabelsRequest(filter="label ==")),
    "rebuild unknown index": lambda s: s.admin.RebuildIndex(
        pb.RebuildIndexRequest(index_type="BOGUS")),
    "rebuild non-numeric parameter": lambda s: s.admin.RebuildIndex(
        pb.RebuildIndexRequest(index_type="HNSW", params={"M": "many"})),
    "rebuild parameter out of range": lambda s: s.admin.RebuildIndex(
        pb.RebuildIndexRequest(index_type="HNSW", params={"M": "-4"})),
    "rebuild unknown parameter": lambda s: s.admin.RebuildIndex(
        pb.RebuildIndexRequest(index_type="HNSW", params={"colour": "blue"})),
    "drop without confirmation": lambda s: s.admin.DropCollection(
        pb.DropCollectionRequest(name="images")),
    "evaluation with an unknown configuration": lambda s: s.jobs.StartEvaluation(
        pb.StartEvaluationRequest(folder=str(s.root), configs=["no-such-config"])),
    "roll-out of a path as version": lambda s: s.jobs.StartRollOut(
        pb.RollOutRequest(version="../../etc", confirm=True)),
    "roll-out of a NUL version": lambda s: s.jobs.StartRollOut(
        pb.RollOutRequest(version="v1\x00", confirm=True)),
    "ingest with a NUL": lambda s: s.jobs.StartIngest(
        pb.StartIngestRequest(source=f"{s.root}/\x00")),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_malformed_field_is_the_callers_error(stubs: Stubs, case: str) -> None:
    """The call fails with INVALID_ARGUMENT, OUT_OF_RANGE or RESOURCE_EXHAUSTED and a message;
    the collection is unchanged."""
    before = stubs.store.count()
    with pytest.raises(grpc.RpcError) as failed:
        REFUSED[case](stubs)
    error: Any = failed.value
    assert error.code() in CALLER_ERRORS, (case, error.code(), error.details())
    assert error.details(), case
    assert stubs.store.count() == before


def test_malformed_items_fail_alone(stubs: Stubs) -> None:
    """In Embed, BatchSearch and Upsert each malformed item gets its own caller's error code and
    the good items their results; nothing malformed is stored."""
    embedded = stubs.embed.Embed(pb.EmbedRequest(images=[b"", _image(), b"\x89PNG\r\n"]))
    assert [r.WhichOneof("result") for r in embedded.results] == ["error", "embedding", "error"]

    batch = stubs.search.BatchSearch(pb.BatchSearchRequest(requests=[
        pb.SearchRequest(top_k=3),
        pb.SearchRequest(image=_image(), top_k=3),
        pb.SearchRequest(vector=_vector(stubs.dim, NAN), top_k=3),
        pb.SearchRequest(image=_image(), top_k=3, filter="((("),
        pb.SearchRequest(image=_image(), top_k=UINT32_MAX),
        pb.SearchRequest(image=_image(), top_k=3, mode="bogus"),
    ]))
    kinds = [r.WhichOneof("result") for r in batch.results]
    assert kinds == ["error", "response", "error", "error", "error", "error"]
    assert all(r.error.code in CALLER_ITEM_CODES for r in batch.results if r.HasField("error")), \
        [r.error for r in batch.results]

    before = stubs.store.count()
    nested = "[" * 100_000 + "]" * 100_000
    upserted = stubs.catalog.Upsert(pb.UpsertRequest(items=[
        pb.UpsertItem(image=encode(gradient_image(seed=90)), meta_json="not json"),
        pb.UpsertItem(image=encode(gradient_image(seed=91)), meta_json="[1, 2]"),
        pb.UpsertItem(image=encode(gradient_image(seed=92)), meta_json=nested),
        pb.UpsertItem(image=encode(gradient_image(seed=98)), meta_json=json.dumps({"k": "v" * 70_000})),
        pb.UpsertItem(image=encode(gradient_image(seed=93)), label="l" * 100_000),
        pb.UpsertItem(image=encode(gradient_image(seed=94)), source="s" * 100_000),
        pb.UpsertItem(image=encode(gradient_image(seed=95)), tags=["t" * 100_000]),
        pb.UpsertItem(image=encode(gradient_image(seed=96)), tags=[f"t{i}" for i in range(5000)]),
        pb.UpsertItem(image=encode(gradient_image(seed=97)), meta_json='{"k": "v" }',
                      label='quote " and \\ backslash'),
    ]))
    errors = [r.error.code for r in upserted.results[:-1]]
    assert all(code in CALLER_ITEM_CODES for code in errors), [r.error for r in upserted.results]
    assert upserted.results[-1].WhichOneof("result") == "image", upserted.results[-1]
    assert stubs.store.count() == before + 1
