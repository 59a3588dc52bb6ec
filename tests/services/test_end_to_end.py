"""End to end: ingest the demo photos, serve them over real gRPC on port 0, search."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from lookalike.app.compose import blobs_from, engine_from, pipeline_from, store_from
from lookalike.core.settings import ServerSettings, Settings
from lookalike.embedder.runtime import Embedder
from lookalike.ingestion.sources import folder_items
from lookalike.services.client import ClientError, LookalikeClient
from lookalike.services.server import start_server
from tests.conftest import S3Server, make_settings


@dataclass
class Served:
    settings: Settings
    client: LookalikeClient
    address: str
    demo_dir: Path
    first_added: int


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder, demo_dir: Path
) -> Iterator[Served]:
    """The demo collection behind a real gRPC server on 127.0.0.1, stopped afterwards."""
    settings = make_settings(tmp_path_factory.mktemp("data"))
    store = store_from(settings, embedder)
    blobs = blobs_from(settings)
    report = pipeline_from(settings, embedder, store, blobs).run(
        folder_items(demo_dir), progress=False
    )
    server = start_server(
        engine_from(settings, embedder, store, blobs), ServerSettings(host="127.0.0.1", port=0)
    )
    try:
        with LookalikeClient(server.address, timeout_s=30) as client:
            yield Served(settings, client, server.address, demo_dir, report.added)
    finally:
        server.stop(grace_s=1.0)


def test_the_query_photo_comes_back_first(served: Served) -> None:
    """Searching with a stored photo returns it first with score close to 1."""
    assert served.first_added >= 20
    query = served.demo_dir / "animals" / "chelsea.png"
    response = served.client.search(image=query.read_bytes(), top_k=5, include_thumbnails=True)
    assert len(response.hits) == 5
    first = response.hits[0]
    assert first.source == str(query.absolute())
    assert first.label == "animals"
    assert first.score == pytest.approx(1.0, abs=1e-3)
    assert response.hits[1].score < 0.95
    assert first.thumbnail[:2] == b"\xff\xd8"  # a JPEG
    assert response.took_ms > 0


def test_a_second_ingest_adds_nothing(served: Served, embedder: Embedder) -> None:
    """Re-ingesting the same folder stores nothing new (content-hash ids)."""
    store = store_from(served.settings, embedder)
    before = store.count()
    report = pipeline_from(served.settings, embedder, store, blobs_from(served.settings)).run(
        folder_items(served.demo_dir), progress=False
    )
    assert report.added == 0
    assert report.already_stored == before
    assert store.count() == before


def test_search_by_stored_id_excludes_the_query(served: Served) -> None:
    """'More like this' on a stored image returns its neighbours, not itself."""
    first = served.client.search(
        image=(served.demo_dir / "space" / "moon.png").read_bytes(), top_k=1
    ).hits[0]
    neighbours = served.client.search(image_id=first.id, top_k=5).hits
    assert len(neighbours) == 5
    assert first.id not in {h.id for h in neighbours}


def test_filter_expression_restricts_results(served: Served) -> None:
    """A filter on label returns only that label."""
    query = (served.demo_dir / "animals" / "chelsea.png").read_bytes()
    hits = served.client.search(image=query, top_k=10, filter_expr='label == "textures"').hits
    assert hits
    assert {h.label for h in hits} == {"textures"}


@pytest.mark.parametrize(
    ("kwargs", "code", "message"),
    [
        ({"image": b"not an image"}, grpc.StatusCode.INVALID_ARGUMENT, "not a recognised image"),
        ({"image_id": 12345}, grpc.StatusCode.NOT_FOUND, "no stored image with id 12345"),
        ({"image": b"x", "top_k": 100000}, grpc.StatusCode.INVALID_ARGUMENT, "top_k"),
    ],
)
def test_errors_carry_status_and_message(
    served: Served, kwargs: dict[str, object], code: grpc.StatusCode, message: str
) -> None:
    """Bad requests get the right status code and a message naming the problem."""
    with pytest.raises(ClientError) as info:
        served.client.search(**kwargs)  # type: ignore[arg-type]
    assert info.value.code == code
    assert message in info.value.message


def test_a_bad_filter_is_invalid_argument(served: Served) -> None:
    """A filter Milvus refuses is INVALID_ARGUMENT naming the filter."""
    query = (served.demo_dir / "animals" / "chelsea.png").read_bytes()
    with pytest.raises(ClientError) as info:
        served.client.search(image=query, filter_expr="label = = 1")
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "label = = 1" in info.value.message


def test_embed_returns_one_result_per_image_in_order(served: Served, embedder: Embedder) -> None:
    """Embed answers each image with a unit vector or an error, in request order."""
    good = (served.demo_dir / "space" / "moon.png").read_bytes()
    results = served.client.embed([good, b"", good])
    assert [r.vector is not None for r in results] == [True, False, True]
    assert "empty file" in results[1].error
    vector = results[0].vector
    assert vector is not None
    assert vector.shape == (embedder.dim,)


def test_health_and_reflection(served: Served) -> None:
    """Standard health says SERVING; reflection lists the lookalike.v1 services."""
    assert served.client.healthy()
    assert served.client.healthy("lookalike.v1.SearchService")
    with grpc.insecure_channel(served.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        response = next(iter(stub.ServerReflectionInfo(iter([request]))))
    names = {s.name for s in response.list_services_response.service}
    assert {"lookalike.v1.SearchService", "lookalike.v1.EmbedService",
            "grpc.health.v1.Health"} <= names


def test_unreachable_server_is_a_clear_client_error() -> None:
    """A client pointed at a closed port gets UNAVAILABLE, flagged as unreachable."""
    with LookalikeClient("127.0.0.1:1", timeout_s=2) as client, \
            pytest.raises(ClientError) as info:
        client.search(image=b"x")
    assert info.value.unreachable


def test_s3_blobs_give_presigned_urls(
    tmp_path: Path, embedder: Embedder, demo_dir: Path, s3_server: S3Server
) -> None:
    """With blobs in S3, hits carry presigned thumbnail and original URLs that serve them."""
    settings = make_settings(tmp_path / "data").model_copy(
        update={"blobs": s3_server.settings.model_copy(update={"url": "s3://lookalike-e2e"})}
    )
    store = store_from(settings, embedder)
    blobs = blobs_from(settings)
    pipeline_from(settings, embedder, store, blobs).run(
        folder_items(demo_dir / "space"), progress=False
    )
    server = start_server(
        engine_from(settings, embedder, store, blobs), ServerSettings(host="127.0.0.1", port=0)
    )
    try:
        with LookalikeClient(server.address) as client:
            query = demo_dir / "space" / "moon.png"
            first = client.search(image=query.read_bytes(), top_k=1).hits[0]
    finally:
        server.stop(grace_s=1.0)
    assert first.source == str(query.absolute())
    with urllib.request.urlopen(first.thumbnail_url, timeout=10) as response:
        assert response.read()[:2] == b"\xff\xd8"
    with urllib.request.urlopen(first.image_url, timeout=10) as response:
        assert response.read() == query.read_bytes()


def test_ids_only_ranks_like_the_full_search(served: Served) -> None:
    """ids_only returns the same ids and scores, without metadata."""
    query = (served.demo_dir / "objects" / "coffee.png").read_bytes()
    full = served.client.search(image=query, top_k=8).hits
    bare = served.client.search(image=query, top_k=8, ids_only=True).hits
    assert [h.id for h in bare] == [h.id for h in full]
    assert [h.score for h in bare] == pytest.approx([h.score for h in full], abs=1e-5)
    assert {h.source for h in bare} == {""}
