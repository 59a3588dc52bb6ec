"""The composition root's factories: settings in, wired components out."""

from __future__ import annotations

from typing import Any

from lookalike.core.blob_store import BlobStore, open_blob_store
from lookalike.core.errors import ConfigError, StoreUnavailable
from lookalike.core.settings import MilvusSettings, RetrievalSettings, Settings
from lookalike.core.vector_store import (
    DbaParams,
    MilvusVectorStore,
    connect_milvus,
    live_collection_spec,
)
from lookalike.embedder.accel import tuned_queue_batches
from lookalike.embedder.local_features import LocalFeatureConfig
from lookalike.embedder.matching import VerifyPolicy
from lookalike.embedder.runtime import Embedder
from lookalike.embedder.spec import EmbedderSpec
from lookalike.embedder.whitening import PCAWhitening
from lookalike.ingestion.metrics import IngestMetrics
from lookalike.ingestion.model_config import embedder_config
from lookalike.ingestion.pipeline import IngestPipeline
from lookalike.ingestion.retry import RetryPolicy
from lookalike.maintenance.hash_codes import attach_hash
from lookalike.maintenance.whiten import load_whitening
from lookalike.services.client import LookalikeClient
from lookalike.services.remote_embedder import RemoteEmbedder
from lookalike.services.search import ModelFollower, QueryEmbedder, Reranking, SearchEngine


def embedder_from(settings: Settings, whitening: PCAWhitening | None = None) -> Embedder:
    """The embedder the settings describe (not loaded yet), `whitening` applied to its output."""
    return Embedder(embedder_config(settings.model, whitening, settings.cache_dir))


def model_batch_size(settings: Settings) -> int:
    """Images per model batch: the embedder's own rule (configured size, or the default of the
    backbone family, device and engine) for the settings' model, which is not loaded."""
    return embedder_from(settings).batch_size


def milvus_from(settings: Settings) -> Any:
    """One MilvusClient for the settings' URI: a command opens it once and hands it to every
    factory below that reads or writes a collection."""
    return connect_milvus(settings.milvus_uri, settings.milvus)


def blobs_from(settings: Settings) -> BlobStore:
    """The blob store the settings describe."""
    return open_blob_store(settings.blob_url, settings.blobs)


def clean_interrupted_writes(settings: Settings, blobs: BlobStore) -> str | None:
    """Remove what interrupted writes left in `blobs` (temp files, incomplete multipart
    uploads): a line saying how many, or why they could not be; None when there were none.

    A store that cannot be cleaned now keeps its leftovers until the next start, and the caller
    goes on: what it came to do fails on its own if the store is really down.
    """
    try:
        removed = blobs.clean_interrupted(settings.blobs.abandoned_after_s)
    except StoreUnavailable as exc:
        return f"warning: leftovers of interrupted blob writes were not removed: {exc}"
    if not removed:
        return None
    return f"removed {removed} leftover{'s' if removed > 1 else ''} of interrupted blob writes"


def store_from(settings: Settings, embedder: Embedder, collection: str | None = None, *,
               milvus: Any = None, blobs: BlobStore | None = None) -> MilvusVectorStore:
    """The collection for this embedder's model, created when missing (through `milvus` and
    `blobs` when the caller has opened them); ConfigError when the settings partition by
    predicted class and the model has no classifier to predict one."""
    if settings.milvus.partition_by == "predicted" and not embedder.predicts_categories:
        raise ConfigError(
            f"LOOKALIKE_MILVUS__PARTITION_BY=predicted needs a backbone with an ImageNet "
            f"classifier, and {embedder.spec.backbone!r} has none: partition by label instead"
        )
    return store_for_spec(settings, embedder.spec, collection, milvus=milvus, blobs=blobs)


def local_features_from(retrieval: RetrievalSettings) -> LocalFeatureConfig:
    """How local features are extracted and matched: the same at ingest, at search and in
    evaluation."""
    return LocalFeatureConfig(
        kind=retrieval.local_features, max_features=retrieval.local_max_features,
        max_side=retrieval.local_max_side, ratio=retrieval.local_ratio,
        ransac_px=retrieval.ransac_px,
    )


def verify_policy_from(retrieval: RetrievalSettings) -> VerifyPolicy:
    """When a search's candidate counts as verified, and when verifying may stop early."""
    return VerifyPolicy(retrieval.min_inliers, retrieval.confident_inliers)


def pipeline_from(settings: Settings, embedder: Embedder, store: MilvusVectorStore,
                  blobs: BlobStore, metrics: IngestMetrics | None = None) -> IngestPipeline:
    """An ingestion pipeline over these components; it stores local features when search
    verifies."""
    ingest = settings.ingest
    return IngestPipeline(
        embedder, store, blobs,
        batch_size=model_batch_size(settings),
        decode_workers=ingest.decode_workers,
        thumbnail_px=ingest.thumbnail_px,
        write_workers=ingest.write_workers,
        queue_batches=tuned_queue_batches(embedder.device, ingest.queue_batches),
        retry=RetryPolicy(ingest.retry_initial_s, ingest.retry_max_s, ingest.retry_deadline_s),
        metrics=metrics,
        local_features=local_features_from(settings.retrieval) if settings.retrieval.verify else None,
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


def store_for_spec(settings: Settings, spec: EmbedderSpec, collection: str | None = None, *,
                   milvus: Any = None, blobs: BlobStore | None = None) -> MilvusVectorStore:
    """The collection for this model spec (local or remote embedder), created when missing;
    `milvus` and `blobs` are opened here when the caller has not."""
    store = MilvusVectorStore.open(
        milvus or milvus_from(settings), collection or settings.milvus.collection,
        spec.to_dict(), spec.dim, _milvus(settings), dba=dba_from(settings),
    )
    attach_hash(store, blobs or blobs_from(settings))
    return store


def existing_store_from(settings: Settings, collection: str | None = None, *,
                        milvus: Any = None, blobs: BlobStore | None = None) -> MilvusVectorStore:
    """An existing collection, whatever model built it (maintenance needs no embedder)."""
    store = MilvusVectorStore.attach(
        milvus or milvus_from(settings), collection or settings.milvus.collection,
        _milvus(settings),
    )
    attach_hash(store, blobs or blobs_from(settings))
    return store


def _milvus(settings: Settings) -> MilvusSettings:
    """The Milvus settings with the URI resolved (Milvus Lite's file under the data dir)."""
    return settings.milvus.model_copy(update={"uri": settings.milvus_uri})


def dba_from(settings: Settings) -> DbaParams | None:
    """The database-side augmentation the settings ask for; None when off."""
    retrieval = settings.retrieval
    return DbaParams(retrieval.dba_k, retrieval.dba_alpha) if retrieval.dba_k > 0 else None


def whitening_for(settings: Settings, blobs: BlobStore, collection: str | None = None, *,
                  milvus: Any = None) -> PCAWhitening | None:
    """The whitening the collection's vectors were made with, to whiten queries the same way.

    None when the settings say `none`, the collection does not exist yet, or it is unwhitened.
    Reads the collection's stored spec and creates nothing.
    """
    if settings.retrieval.whitening == "none":
        return None
    spec = live_collection_spec(milvus or milvus_from(settings),
                                collection or settings.milvus.collection) or {}
    whitening_id = str(spec.get("whitening", "none"))
    return None if whitening_id == "none" else load_whitening(blobs, whitening_id)


def collection_embedder_from(settings: Settings, blobs: BlobStore, collection: str | None = None,
                             *, milvus: Any = None) -> Embedder:
    """The embedder for an existing collection: the settings' model, whitened as it is."""
    return embedder_from(settings,
                         whitening=whitening_for(settings, blobs, collection, milvus=milvus))


def engine_from(settings: Settings, embedder: QueryEmbedder, store: MilvusVectorStore,
                blobs: BlobStore, follower: ModelFollower | None = None) -> SearchEngine:
    """A search engine over these components, with the retrieval settings' QE and verification;
    `follower` gives it the models roll-outs stage, so it follows the collection to them."""
    retrieval = settings.retrieval
    return SearchEngine(
        embedder, store, blobs,
        max_top_k=settings.server.max_top_k,
        presign_expiry_s=settings.blobs.presign_expiry_s,
        reranking=Reranking(
            qe_n=retrieval.qe_n, qe_alpha=retrieval.qe_alpha, verify=retrieval.verify,
            verify_top_n=retrieval.verify_top_n, policy=verify_policy_from(retrieval),
            local_features=local_features_from(retrieval), max_pixels=settings.model.max_pixels,
            features_cache_bytes=retrieval.features_cache_mb * 2**20,
        ),
        follower=follower,
    )
