"""Geometric verification at search time: in the engine, over gRPC (per-query override, batch,
remote embedder) and from the CLI, on the demo photographs in Milvus Lite and local blobs."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import pytest
from PIL import Image

from lookalike import cli
from lookalike.app.compose import blobs_from, engine_from, pipeline_from, store_from
from lookalike.core.blob_store import BlobStore, LocalBlobStore
from lookalike.core.ids import content_id
from lookalike.core.schemas import SearchHit
from lookalike.core.settings import RetrievalSettings, ServerSettings, Settings
from lookalike.core.vector_store import MilvusVectorStore
from lookalike.embedder.runtime import Embedder
from lookalike.ingestion.sources import folder_items
from lookalike.services.client import ClientError, LookalikeClient, SearchQuery
from lookalike.services.remote_embedder import RemoteEmbedder
from lookalike.services.search import Query, SearchEngine
from lookalike.services.server import RunningServer, start_server
from tests.conftest import make_settings

TARGET = "text.png"
MIN_INLIERS = RetrievalSettings().min_inliers


def rotated_crop(image: Image.Image, angle: float = 15.0, fraction: float = 0.35) -> bytes:
    """A PNG of `image` rotated by `angle` degrees, then cropped to `fraction` of each side."""
    width, height = image.size
    rotated = image.convert("RGB").rotate(angle, resample=Image.Resampling.BICUBIC)
    crop_w, crop_h = int(width * fraction), int(height * fraction)
    left, top = (width - crop_w) // 2 + width // 10, (height - crop_h) // 2
    out = io.BytesIO()
    rotated.crop((left, top, left + crop_w, top + crop_h)).save(out, "PNG")
    return out.getvalue()


@dataclass
class Collection:
    settings: Settings
    store: MilvusVectorStore
    blobs: BlobStore
    embedder: Embedder
    query: bytes
    query_path: Path
    cat_id: int
    cat_copy_id: int

    def engine(self, verify: bool) -> SearchEngine:
        """An engine whose default is `verify`."""
        retrieval = RetrievalSettings(verify=verify)
        return engine_from(self.settings.model_copy(update={"retrieval": retrieval}),
                           self.embedder, self.store, self.blobs)

    def serve(self, engine: SearchEngine) -> RunningServer:
        return start_server(engine, ServerSettings(host="127.0.0.1", port=0))


@pytest.fixture(scope="module")
def collection(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder, demo_dir: Path
) -> Collection:
    """The demo photographs and a rotated crop of chelsea.png, ingested with local features; the
    query is a rotated crop of text.png, which is not stored."""
    root = tmp_path_factory.mktemp("verification")
    photos = root / "photos"
    shutil.copytree(demo_dir, photos)
    with Image.open(photos / "animals" / "chelsea.png") as cat:
        copy = rotated_crop(cat, angle=-15.0, fraction=0.6)
    (photos / "animals" / "chelsea-rotated.png").write_bytes(copy)
    with Image.open(photos / "documents" / TARGET) as text:
        query = rotated_crop(text)
    query_path = root / "query.png"
    query_path.write_bytes(query)
    settings = make_settings(root / "data").model_copy(
        update={"retrieval": RetrievalSettings(verify=True)}
    )
    store = store_from(settings, embedder)
    blobs = blobs_from(settings)
    report = pipeline_from(settings, embedder, store, blobs).run(
        folder_items(photos), progress=False
    )
    assert report.added == 25
    assert not report.failed
    cat_id = content_id((photos / "animals" / "chelsea.png").read_bytes())[0]
    return Collection(settings, store, blobs, embedder, query, query_path, cat_id,
                      content_id(copy)[0])


def _names(hits: Sequence[SearchHit]) -> list[str]:
    return [Path(h.image.source).name for h in hits]


def test_verification_ranks_a_rotated_crop_above_globally_closer_images(
    collection: Collection,
) -> None:
    """A 15° rotated 35% crop of text.png: the global descriptor prefers other images; verified
    search puts text.png first, keeping its descriptor score, and cuts to top_k."""
    engine = collection.engine(verify=True)
    plain = engine.search(Query(image=collection.query), top_k=5, verify=False).hits
    assert _names(plain)[0] != TARGET
    assert TARGET in _names(plain)
    assert all(h.inliers is None for h in plain)

    verified = engine.search(Query(image=collection.query), top_k=5).hits
    assert len(verified) == 5
    assert _names(verified)[0] == TARGET
    first, *rest = verified
    assert (first.inliers or 0) >= MIN_INLIERS
    assert all((h.inliers or 0) < (first.inliers or 0) for h in rest)
    plain_score = next(h.score for h in plain if Path(h.image.source).name == TARGET)
    assert first.score == pytest.approx(plain_score, abs=1e-5)


def test_ids_only_rankings_are_verified_too(collection: Collection) -> None:
    """rank() verifies like search(): ids first by inliers, each with its count."""
    engine = collection.engine(verify=True)
    ranked = engine.rank(Query(image=collection.query), top_k=3).ranked
    target = content_id(
        (collection.query_path.parent / "photos" / "documents" / TARGET).read_bytes()
    )[0]
    assert ranked[0].id == target
    assert all(r.inliers is not None for r in ranked)


def test_a_stored_query_is_verified_with_its_stored_features(collection: Collection) -> None:
    """By stored id, the query's features blob is matched: the rotated copy of chelsea.png comes
    first, verified, and the query itself is left out."""
    hits = collection.engine(verify=True).search(Query(image_id=collection.cat_id), top_k=3).hits
    assert hits[0].image.id == collection.cat_copy_id
    assert (hits[0].inliers or 0) >= MIN_INLIERS
    assert collection.cat_id not in [h.image.id for h in hits]


def test_missing_features_count_as_no_inliers(collection: Collection, tmp_path: Path) -> None:
    """Over a blob store without features, every candidate has 0 inliers and the descriptor
    order stands: never an error, for image and id queries alike."""
    engine = SearchEngine(collection.embedder, collection.store, LocalBlobStore(tmp_path),
                          max_top_k=100, presign_expiry_s=60,
                          reranking=collection.engine(verify=True).reranking)
    for query in (Query(image=collection.query), Query(image_id=collection.cat_id)):
        plain = engine.search(query, top_k=5, verify=False).hits
        verified = engine.search(query, top_k=5).hits
        assert [h.image.id for h in verified] == [h.image.id for h in plain]
        assert [h.inliers for h in verified] == [0] * 5


class _CountingBlobs(LocalBlobStore):
    """The collection's blob directory, counting the feature blobs read."""

    feature_reads = 0

    def get(self, key: str) -> bytes:
        if key.startswith("features/"):
            self.feature_reads += 1
        return super().get(key)


def test_repeated_searches_take_features_from_memory(collection: Collection) -> None:
    """A second verified search reads no feature blob and ranks as the first did; with the
    cache off, every search reads them again."""
    for cache_bytes, reads_again in ((256 * 2**20, False), (0, True)):
        blobs = _CountingBlobs(Path(collection.settings.blob_url))
        reranking = replace(collection.engine(verify=True).reranking,
                            features_cache_bytes=cache_bytes)
        engine = SearchEngine(collection.embedder, collection.store, blobs, max_top_k=100,
                              presign_expiry_s=60, reranking=reranking)
        first = engine.search(Query(image=collection.query), top_k=5).hits
        reads = blobs.feature_reads
        assert reads > 0
        second = engine.search(Query(image=collection.query), top_k=5).hits
        assert (blobs.feature_reads > reads) is reads_again
        assert [(h.image.id, h.inliers) for h in second] == [(h.image.id, h.inliers) for h in first]


def test_vector_queries_are_not_verified(collection: Collection) -> None:
    """A raw vector has no image to take features from: it is searched as it is."""
    vector = collection.embedder.embed_bytes([collection.query])[0].vector
    assert vector is not None
    hits = collection.engine(verify=True).search(Query(vector=vector), top_k=3).hits
    assert all(h.inliers is None for h in hits)


@pytest.fixture(scope="module")
def unverified_server(collection: Collection) -> Iterator[LookalikeClient]:
    """A server whose default is no verification and no query expansion, and its client."""
    running = collection.serve(collection.engine(verify=False))
    try:
        with LookalikeClient(running.address, timeout_s=60) as client:
            yield client
    finally:
        running.stop(grace_s=1.0)


def test_grpc_query_can_switch_verification_on_and_off(
    collection: Collection, unverified_server: LookalikeClient
) -> None:
    """Unset `verify` follows the server (off); verify=True re-ranks and reports inliers."""
    plain = unverified_server.search(image=collection.query, top_k=5).hits
    assert all(h.inliers is None for h in plain)
    assert Path(plain[0].source).name != TARGET
    verified = unverified_server.search(image=collection.query, top_k=5, verify=True).hits
    assert Path(verified[0].source).name == TARGET
    assert (verified[0].inliers or 0) >= MIN_INLIERS
    ids_only = unverified_server.search(image=collection.query, top_k=5, verify=True,
                                        ids_only=True).hits
    assert [h.id for h in ids_only] == [h.id for h in verified]
    assert [h.inliers for h in ids_only] == [h.inliers for h in verified]

    running = collection.serve(collection.engine(verify=True))
    try:
        with LookalikeClient(running.address, timeout_s=60) as client:
            assert client.search(image=collection.query, top_k=5).hits[0].inliers is not None
            off = client.search(image=collection.query, top_k=5, verify=False).hits
            assert [h.id for h in off] == [h.id for h in plain]
            assert all(h.inliers is None for h in off)
    finally:
        running.stop(grace_s=1.0)


def test_grpc_query_expansion_override(
    collection: Collection, unverified_server: LookalikeClient
) -> None:
    """qe_n on a request expands that query as the engine does; out of range is INVALID_ARGUMENT."""
    engine = collection.engine(verify=False)
    for qe_n in (0, 3):
        expected = engine.search(Query(image=collection.query), 5, qe_n=qe_n).hits
        got = unverified_server.search(image=collection.query, top_k=5, qe_n=qe_n).hits
        assert [h.id for h in got] == [h.image.id for h in expected]
        assert [h.score for h in got] == pytest.approx([h.score for h in expected], abs=1e-5)
    with pytest.raises(ClientError) as info:
        unverified_server.search(image=collection.query, qe_n=101)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_batch_search_takes_the_options_per_query(
    collection: Collection, unverified_server: LookalikeClient
) -> None:
    """In one BatchSearch, each query is verified or not as it asks, image and id queries alike."""
    results = unverified_server.batch_search([
        SearchQuery(image=collection.query, top_k=5, verify=True),
        SearchQuery(image=collection.query, top_k=5),
        SearchQuery(image_id=collection.cat_id, top_k=3, verify=True),
        SearchQuery(image=collection.query, top_k=5, qe_n=500),
    ])
    verified, plain, by_id, refused = (r.response for r in results)
    assert verified is not None
    assert plain is not None
    assert by_id is not None
    assert Path(verified.hits[0].source).name == TARGET
    assert verified.hits[0].inliers is not None
    assert Path(plain.hits[0].source).name != TARGET
    assert all(h.inliers is None for h in plain.hits)
    assert by_id.hits[0].id == collection.cat_copy_id
    assert refused is None
    assert results[3].error_code == "INVALID_ARGUMENT"


def test_a_remote_embedder_engine_verifies(
    collection: Collection, unverified_server: LookalikeClient
) -> None:
    """An engine embedding through a remote EmbedService (no local decode) still verifies."""
    engine = engine_from(collection.settings, RemoteEmbedder(unverified_server), collection.store,
                         collection.blobs)
    hits = engine.search(Query(image=collection.query), top_k=3).hits
    assert _names(hits)[0] == TARGET
    assert (hits[0].inliers or 0) >= MIN_INLIERS


def test_cli_search_flags(collection: Collection, capsys: pytest.CaptureFixture[str]) -> None:
    """`lookalike search --verify` prints an inliers column with text.png first; --no-verify
    on a verifying server prints none."""
    running = collection.serve(collection.engine(verify=True))
    try:
        argv = ["search", str(collection.query_path), "--address", running.address, "--top-k", "3"]
        assert cli.main([*argv, "--verify", "--qe", "0"]) == cli.EXIT_OK
        out = capsys.readouterr().out.splitlines()
        assert "inliers" in out[1]
        assert out[2].split()[-1].endswith(TARGET)
        assert cli.main([*argv, "--no-verify"]) == cli.EXIT_OK
        assert "inliers" not in capsys.readouterr().out
    finally:
        running.stop(grace_s=1.0)


def test_catalog_upsert_stores_features_and_delete_removes_them(collection: Collection) -> None:
    """Images added through the API are verifiable like ingested ones."""
    from lookalike.services.catalog import Catalog, NewImage

    engine = collection.engine(verify=True)
    catalog = Catalog(engine, thumbnail_px=128, max_pixels=50_000_000)
    with Image.open(collection.query_path) as im:
        out = io.BytesIO()
        im.convert("RGB").rotate(7, expand=True).save(out, "PNG")
    outcome = catalog.upsert([NewImage(image=out.getvalue(), source="api")])[0]
    assert outcome.image is not None
    key = outcome.image.features_key
    assert collection.blobs.exists(key)
    assert catalog.delete(ids=[outcome.image.id]) == [outcome.image.id]
    assert not collection.blobs.exists(key)
