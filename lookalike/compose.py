"""The composition root's factories: settings in, wired components out."""

from __future__ import annotations

from pathlib import Path

from lookalike.core.blob_store import BlobStore, open_blob_store
from lookalike.core.settings import Settings
from lookalike.core.vector_store import MilvusVectorStore, connect_milvus
from lookalike.embedder.runtime import Embedder, EmbedderConfig
from lookalike.embedder.spec import EmbedderSpec
from lookalike.ingestion.metrics import IngestMetrics
from lookalike.ingestion.pipeline import IngestPipeline
from lookalike.ingestion.retry import RetryPolicy
from lookalike.services.client import LookalikeClient
from lookalike.services.remote_embedder import RemoteEmbedder
from lookalike.services.search import QueryEmbedder, SearchEngine


def embedder_from(settings: Settings) -> Embedder:
    """The embedder the settings describe (not loaded yet)."""
    model = settings.model
    return Embedder(EmbedderConfig(
        backbone=model.backbone,
        weights=Path(model.weights) if model.weights else None,
        input_size=model.image_size,
        pooling=model.pooling,
        gem_p=model.gem_p,
        batch_size=model.batch_size,
        device=model.device,
        threads=model.threads,
        max_pixels=model.max_pixels,
        decode_px=model.decode_px,
    ))


def blobs_from(settings: Settings) -> BlobStore:
    """The blob store the settings describe."""
    return open_blob_store(settings.blob_url, settings.blobs)


def store_from(settings: Settings, embedder: Embedder, collection: str | None = None) -> MilvusVectorStore:
    """The collection for this embedder's model, created when missing."""
    return store_for_spec(settings, embedder.spec, collection)


def pipeline_from(settings: Settings, embedder: Embedder, store: MilvusVectorStore,
                  blobs: BlobStore, metrics: IngestMetrics | None = None) -> IngestPipeline:
    """An ingestion pipeline over these components."""
    ingest = settings.ingest
    return IngestPipeline(
        embedder, store, blobs,
        batch_size=settings.model.batch_size,
        decode_workers=ingest.decode_workers,
        thumbnail_px=ingest.thumbnail_px,
        write_workers=ingest.write_workers,
        queue_batches=ingest.queue_batches,
        retry=RetryPolicy(ingest.retry_initial_s, ingest.retry_max_s, ingest.retry_deadline_s),
        metrics=metrics,
    )


def query_embedder_from(settings: Settings) -> Embedder | RemoteEmbedder:
    """The in-process embedder, or a client of the remote EmbedService the settings name."""
    remote = settings.embed_service
    if not remote.address:
        return embedder_from(settings)
    client = LookalikeClient(
        remote.address, timeout_s=remote.timeout_s, max_message_mb=settings.server.max_message_mb,
        token=remote.token.get_secret_value(), tls_ca=remote.tls_ca,
    )
    return RemoteEmbedder(client)


def store_for_spec(settings: Settings, spec: EmbedderSpec,
                   collection: str | None = None) -> MilvusVectorStore:
    """The collection for this model spec (local or remote embedder), created when missing."""
    client = connect_milvus(settings.milvus_uri, settings.milvus)
    return MilvusVectorStore.open(
        client, collection or settings.milvus.collection, spec.to_dict(), spec.dim,
        settings.milvus,
    )


def engine_from(settings: Settings, embedder: QueryEmbedder, store: MilvusVectorStore,
                blobs: BlobStore) -> SearchEngine:
    """A search engine over these components."""
    return SearchEngine(
        embedder, store, blobs,
        max_top_k=settings.server.max_top_k,
        presign_expiry_s=settings.blobs.presign_expiry_s,
    )
