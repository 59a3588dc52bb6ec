"""A typed client of the lookalike.v1 API; the UI and CLI reach the platform only through it."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from numpy.typing import NDArray

from lookalike.embedder.spec import EmbedderSpec
from lookalike.services.gen.lookalike.v1 import lookalike_pb2 as pb
from lookalike.services.gen.lookalike.v1 import lookalike_pb2_grpc as pb_grpc
from lookalike.services.job_summaries import BadFile as BadFile
from lookalike.services.job_summaries import EvalRow as EvalRow
from lookalike.services.job_summaries import EvalSummary as EvalSummary
from lookalike.services.job_summaries import IngestSummary as IngestSummary
from lookalike.services.job_summaries import ModelInfo as ModelInfo
from lookalike.services.job_summaries import TrainEpoch as TrainEpoch
from lookalike.services.job_summaries import TrainSummary as TrainSummary
from lookalike.services.reachability import HealthCheck, HealthStatus, diagnose_unreachable

if TYPE_CHECKING:
    from lookalike.core.settings import ClientSettings

Reply = TypeVar("Reply")


class ClientError(Exception):
    """A call that failed, with the gRPC status, the server's explanation and, when the server
    answered, the request id it logged the call under; the address called, and whether over TLS
    (for `diagnose_unreachable`)."""

    def __init__(
        self, code: grpc.StatusCode, message: str, request_id: str = "", *, address: str = "",
        tls: bool = False,
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.request_id = request_id
        self.address = address
        self.tls = tls

    @property
    def unreachable(self) -> bool:
        """Whether the server could not be reached at all (rather than answering UNAVAILABLE
        because one of its own stores is down)."""
        return bool(self.code == grpc.StatusCode.UNAVAILABLE) and not self.request_id


def _request_id(exc: grpc.RpcError) -> str:
    """The request id the server sent back with its error; "" when no server answered."""
    trailing = exc.trailing_metadata() if isinstance(exc, grpc.Call) else None
    return next((str(v) for k, v in trailing or () if k == "x-request-id"), "")


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result (or, from `get`, one stored image with score 0)."""

    id: int
    score: float
    label: str
    source: str
    sha256: str
    width: int
    height: int
    tags: tuple[str, ...]
    thumbnail: bytes
    thumbnail_url: str
    image_url: str
    blob_key: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    ingested_at: int = 0
    # Geometrically consistent local feature matches; None where the search was not verified.
    inliers: int | None = None
    # The stored original, only from get(..., include_originals=True).
    image: bytes = b""


@dataclass(frozen=True, slots=True)
class SearchResponse:
    """Hits best first, the server-side time, the model's share of it, and how long the query
    waited for the model."""

    hits: list[Hit]
    took_ms: float
    collection: str
    embed_ms: float = 0.0
    queue_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """One query of `batch_search`: exactly one of image, image_id, vector."""

    image: bytes | None = None
    image_id: int | None = None
    vector: NDArray[np.float32] | None = None
    top_k: int = 10
    filter_expr: str = ""
    min_score: float | None = None
    include_thumbnails: bool = False
    ids_only: bool = False
    # None: the server's setting.
    qe_n: int | None = None
    verify: bool | None = None
    # None: the server's settings. mode: ann, hash_rerank or routed.
    mode: str | None = None
    ef: int | None = None
    nprobe: int | None = None
    rerank_factor: int | None = None
    route_top_n: int | None = None
    # Any of these labels, all of these tags (ANDed with filter_expr).
    labels: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BatchSearchResult:
    """One query's response, or the status it failed with."""

    response: SearchResponse | None
    error_code: str = ""
    error: str = ""


@dataclass(frozen=True, slots=True)
class EmbedResult:
    """One image's embedding, or why it has none, and its predicted ImageNet class ("" when
    the model has no classifier)."""

    vector: NDArray[np.float32] | None
    error: str = ""
    category: str = ""


@dataclass(frozen=True, slots=True)
class EmbedResponse:
    """One result per image, in order, and the model's spec."""

    results: list[EmbedResult]
    model: EmbedderSpec


@dataclass(frozen=True, slots=True)
class UpsertItem:
    """An encoded image and its metadata."""

    image: bytes
    label: str = ""
    tags: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = ""


@dataclass(frozen=True, slots=True)
class UpsertResult:
    """The stored image (created or replaced), or why it was not stored."""

    image: Hit | None
    created: bool = False
    error: str = ""


@dataclass(frozen=True, slots=True)
class GetResponse:
    """Stored images among the ids asked for, and the ids that are not stored."""

    images: list[Hit]
    missing_ids: list[int]


@dataclass(frozen=True, slots=True)
class Stats:
    """What the collection holds and how it is indexed."""

    collection: str
    physical_collection: str
    count: int
    index_type: str
    index_params: dict[str, str]
    metric_type: str
    model: EmbedderSpec


@dataclass(frozen=True, slots=True)
class Page:
    """One page of stored images in id order, and how many match in all."""

    images: list[Hit]
    total: int


@dataclass(frozen=True, slots=True)
class CollectionSummary:
    """A physical Milvus collection: its aliases, size, model and index."""

    name: str
    aliases: tuple[str, ...]
    count: int
    model: EmbedderSpec | None
    index_type: str
    index_params: dict[str, str]
    serving: bool


@dataclass(frozen=True, slots=True)
class RebuildResult:
    """The index the served collection now has, and how long the build took."""

    index_type: str
    index_params: dict[str, str]
    seconds: float


@dataclass(frozen=True, slots=True)
class DropResult:
    """How many images the dropped collection held; whether an empty one replaced it."""

    dropped_images: int
    recreated: bool


JOB_STATES_FINISHED = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class Job:
    """A background job on the server (ingest, evaluate, train or rollout) and how far it got;
    the summary of its kind (a roll-out has none: its progress and message say it all)."""

    id: str
    kind: str
    state: str
    source: str
    done: int
    total: int
    rate_per_s: float
    eta_s: float
    message: str
    started_at: int
    finished_at: int
    ingest: IngestSummary | None
    evaluation: EvalSummary | None
    training: TrainSummary | None = None

    @property
    def finished(self) -> bool:
        """Whether it stopped (succeeded, failed or cancelled)."""
        return self.state in JOB_STATES_FINISHED


def _hit(h: pb.Hit) -> Hit:
    return Hit(id=h.id, score=h.score, label=h.label, source=h.source, sha256=h.sha256,
               width=h.width, height=h.height, tags=tuple(h.tags), thumbnail=h.thumbnail,
               thumbnail_url=h.thumbnail_url, image_url=h.image_url, blob_key=h.blob_key,
               meta=json.loads(h.meta_json) if h.meta_json else {}, ingested_at=h.ingested_at,
               inliers=h.inliers if h.HasField("inliers") else None, image=h.image)


def _job(j: pb.Job) -> Job:
    ingest = None
    if j.HasField("ingest"):
        i = j.ingest
        ingest = IngestSummary(
            seen=i.seen, added=i.added, already_stored=i.already_stored, duplicates=i.duplicates,
            failed=tuple(BadFile(f.path, f.reason) for f in i.failed), seconds=i.seconds,
        )
    evaluation = None
    if j.HasField("evaluation"):
        e = j.evaluation
        evaluation = EvalSummary(
            dataset=e.dataset, kind=e.kind, images=e.images, queries=e.queries,
            rows=tuple(EvalRow(config=r.config, levers=r.levers, scores=dict(r.scores),
                               pk_curve=tuple(r.pk_curve), per_class_ap=dict(r.per_class_ap))
                       for r in e.rows),
        )
    return Job(id=j.id, kind=j.kind, state=j.state, source=j.source, done=j.done, total=j.total,
               rate_per_s=j.rate_per_s, eta_s=j.eta_s, message=j.message,
               started_at=j.started_at, finished_at=j.finished_at, ingest=ingest,
               evaluation=evaluation,
               training=_training(j.training) if j.HasField("training") else None)


def _optional(message: Any, name: str) -> float | None:
    return float(getattr(message, name)) if message.HasField(name) else None


def _training(t: pb.TrainSummary) -> TrainSummary:
    return TrainSummary(
        dataset=t.dataset, classes=t.classes, images=t.images, backbone=t.backbone, loss=t.loss,
        bits=t.bits, epochs_planned=t.epochs_planned,
        epochs=tuple(TrainEpoch(epoch=e.epoch, train_loss=e.train_loss, val_map=e.val_map,
                                seconds=e.seconds) for e in t.epochs),
        best_epoch=t.best_epoch, stopped_early=t.stopped_early,
        pretrained_map=_optional(t, "pretrained_map"), finetuned_map=_optional(t, "finetuned_map"),
        hashed_map=_optional(t, "hashed_map"), float_map=_optional(t, "float_map"),
        comparison=dict(t.comparison), version=t.version, seconds=t.seconds,
    )


def _model(m: pb.ModelInfo) -> ModelInfo:
    return ModelInfo(version=m.version, created_at=m.created_at, backbone=m.backbone,
                     weights_id=m.weights_id, loss=m.loss, bits=m.bits, metrics=dict(m.metrics),
                     trained_on=m.trained_on, size_bytes=m.size_bytes, serving=m.serving)


def _collection(c: pb.CollectionSummary) -> CollectionSummary:
    return CollectionSummary(
        name=c.name, aliases=tuple(c.aliases), count=c.count,
        model=_spec(c.model) if c.HasField("model") else None, index_type=c.index_type,
        index_params=dict(c.index_params), serving=c.serving,
    )


def _spec(m: pb.ModelSpec) -> EmbedderSpec:
    # The message's fields are the spec's fields, by name; a repeated field becomes a tuple.
    # A server before spec version 3 sends no scales: it embedded at one scale, 1.0.
    values = {f.name: getattr(m, f.name) for f in fields(EmbedderSpec)}
    return EmbedderSpec(**{**values, "scales": tuple(m.scales) or (1.0,)})


def _search_response(r: pb.SearchResponse) -> SearchResponse:
    return SearchResponse(hits=[_hit(h) for h in r.hits], took_ms=r.took_ms,
                          collection=r.collection, embed_ms=r.embed_ms, queue_ms=r.queue_ms)


def _search_request(q: SearchQuery) -> pb.SearchRequest:
    given = sum(x is not None for x in (q.image, q.image_id, q.vector))
    if given != 1:
        raise ValueError("pass exactly one of image, image_id, vector")
    request = pb.SearchRequest(top_k=q.top_k, filter=q.filter_expr,
                               include_thumbnails=q.include_thumbnails, ids_only=q.ids_only,
                               qe_n=q.qe_n, verify=q.verify, mode=q.mode, ef=q.ef,
                               nprobe=q.nprobe, rerank_factor=q.rerank_factor,
                               route_top_n=q.route_top_n, labels=list(q.labels),
                               tags=list(q.tags))
    if q.image is not None:
        request.image = q.image
    elif q.image_id is not None:
        request.id = q.image_id
    else:
        assert q.vector is not None
        request.vector.values.extend(np.asarray(q.vector, dtype=np.float32).reshape(-1).tolist())
    if q.min_score is not None:
        request.min_score = q.min_score
    return request


class LookalikeClient:
    """Blocking client; use as a context manager or call `close()`.

    `token` is sent as `authorization: Bearer <token>`; `tls_ca` (a PEM file) switches to TLS,
    verifying the server against that CA (`tls_server_name` overrides the name checked).
    """

    def __init__(
        self,
        address: str,
        timeout_s: float = 30.0,
        max_message_mb: int = 32,
        *,
        token: str = "",
        tls_ca: str = "",
        tls_server_name: str = "",
    ) -> None:
        max_bytes = max_message_mb * 1024 * 1024
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", max_bytes),
            ("grpc.max_send_message_length", max_bytes),
            # Reconnect quickly once a server that was down comes back.
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.min_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ]
        if tls_server_name:
            options.append(("grpc.ssl_target_name_override", tls_server_name))
        if tls_ca:
            credentials = grpc.ssl_channel_credentials(root_certificates=Path(tls_ca).read_bytes())
            self._channel = grpc.secure_channel(address, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(address, options=options)
        self.address = address
        self.timeout_s = timeout_s
        self.config = ClientConfig(address, timeout_s, token, tls_ca)
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )
        self._search = pb_grpc.SearchServiceStub(self._channel)
        self._embed = pb_grpc.EmbedServiceStub(self._channel)
        self._catalog = pb_grpc.CatalogServiceStub(self._channel)
        self._admin = pb_grpc.AdminServiceStub(self._channel)
        self._jobs = pb_grpc.JobServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def __enter__(self) -> LookalikeClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def _call(self, method: Callable[..., Reply], request: Any, timeout_s: float | None) -> Reply:
        try:
            return method(request, timeout=timeout_s or self.timeout_s, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise ClientError(exc.code(), exc.details() or "", _request_id(exc),
                              address=self.address, tls=bool(self.config.tls_ca)) from None

    def search(
        self,
        *,
        image: bytes | None = None,
        image_id: int | None = None,
        vector: NDArray[np.float32] | None = None,
        top_k: int = 10,
        filter_expr: str = "",
        min_score: float | None = None,
        include_thumbnails: bool = False,
        ids_only: bool = False,
        qe_n: int | None = None,
        verify: bool | None = None,
        mode: str | None = None,
        ef: int | None = None,
        nprobe: int | None = None,
        rerank_factor: int | None = None,
        route_top_n: int | None = None,
        labels: Sequence[str] = (),
        tags: Sequence[str] = (),
        timeout_s: float | None = None,
    ) -> SearchResponse:
        """Images most like `image` (encoded bytes), the stored image `image_id`, or `vector`.

        With `min_score`, only hits scoring above it; with `ids_only`, hits carry only id and
        score (the cheap way to get deep rankings). `qe_n` (alpha-query expansion neighbours, 0:
        off) and `verify` (geometric re-ranking) override the server's settings; None keeps them.
        `mode` (ann, hash_rerank, routed), `ef`, `nprobe`, `rerank_factor` and `route_top_n`
        override how the server's vector store searches. `labels` (any of) and `tags` (all of)
        narrow the results like `filter_expr`, without quoting.
        """
        request = _search_request(SearchQuery(
            image=image, image_id=image_id, vector=vector, top_k=top_k, filter_expr=filter_expr,
            min_score=min_score, include_thumbnails=include_thumbnails, ids_only=ids_only,
            qe_n=qe_n, verify=verify, mode=mode, ef=ef, nprobe=nprobe,
            rerank_factor=rerank_factor, route_top_n=route_top_n, labels=tuple(labels),
            tags=tuple(tags),
        ))
        return _search_response(self._call(self._search.Search, request, timeout_s))

    def batch_search(
        self, queries: Sequence[SearchQuery], timeout_s: float | None = None
    ) -> list[BatchSearchResult]:
        """One response or error per query, in order."""
        request = pb.BatchSearchRequest(requests=[_search_request(q) for q in queries])
        response = self._call(self._search.BatchSearch, request, timeout_s)
        return [
            BatchSearchResult(response=_search_response(r.response))
            if r.WhichOneof("result") == "response"
            else BatchSearchResult(response=None, error_code=r.error.code, error=r.error.message)
            for r in response.results
        ]

    def embed_with_model(
        self, images: Sequence[bytes], timeout_s: float | None = None
    ) -> EmbedResponse:
        """One embedding or error per encoded image, in order, and the model's spec."""
        response = self._call(self._embed.Embed, pb.EmbedRequest(images=list(images)), timeout_s)
        return EmbedResponse(
            results=[
                EmbedResult(vector=np.asarray(r.embedding.values, dtype=np.float32),
                            category=r.category)
                if r.WhichOneof("result") == "embedding"
                else EmbedResult(vector=None, error=f"{r.error.code}: {r.error.message}")
                for r in response.results
            ],
            model=_spec(response.model),
        )

    def embed(self, images: Sequence[bytes]) -> list[EmbedResult]:
        """One embedding or error per encoded image, in order."""
        return self.embed_with_model(images).results

    def upsert(self, items: Sequence[UpsertItem], timeout_s: float | None = None) -> list[UpsertResult]:
        """Store images with metadata (replacing the metadata of those already stored)."""
        request = pb.UpsertRequest(items=[
            pb.UpsertItem(image=i.image, label=i.label, tags=list(i.tags),
                          meta_json=json.dumps(i.meta) if i.meta else "", source=i.source)
            for i in items
        ])
        response = self._call(self._catalog.Upsert, request, timeout_s)
        return [
            UpsertResult(image=_hit(r.image), created=r.created)
            if r.WhichOneof("result") == "image"
            else UpsertResult(image=None, error=f"{r.error.code}: {r.error.message}")
            for r in response.results
        ]

    def delete(
        self, ids: Sequence[int] = (), filter_expr: str = "", timeout_s: float | None = None
    ) -> list[int]:
        """Delete stored images by id or by filter; the ids that were deleted."""
        response = self._call(
            self._catalog.Delete, pb.DeleteRequest(ids=list(ids), filter=filter_expr), timeout_s
        )
        return list(response.ids)

    def get(
        self, ids: Sequence[int], include_thumbnails: bool = False, timeout_s: float | None = None,
        include_originals: bool = False,
    ) -> GetResponse:
        """Stored images by id (with their originals when asked), and the ids not stored."""
        response = self._call(
            self._catalog.Get,
            pb.GetRequest(ids=list(ids), include_thumbnails=include_thumbnails,
                          include_originals=include_originals), timeout_s,
        )
        return GetResponse(images=[_hit(h) for h in response.images],
                           missing_ids=list(response.missing_ids))

    def stats(self, timeout_s: float | None = None) -> Stats:
        """Size, index and model of the collection."""
        r = self._call(self._catalog.Stats, pb.StatsRequest(), timeout_s)
        return Stats(collection=r.collection, physical_collection=r.physical_collection,
                     count=r.count, index_type=r.index_type, index_params=dict(r.index_params),
                     metric_type=r.metric_type, model=_spec(r.model))

    def list_images(
        self, *, offset: int = 0, limit: int = 50, filter_expr: str = "",
        labels: Sequence[str] = (), tags: Sequence[str] = (), include_thumbnails: bool = True,
        timeout_s: float | None = None,
    ) -> Page:
        """One page of the collection in id order, and how many images match in all."""
        request = pb.ListRequest(filter=filter_expr, labels=list(labels), tags=list(tags),
                                 offset=offset, limit=limit, include_thumbnails=include_thumbnails)
        response = self._call(self._catalog.List, request, timeout_s)
        return Page(images=[_hit(h) for h in response.images], total=response.total)

    def count_labels(self, filter_expr: str = "", timeout_s: float | None = None) -> dict[str, int]:
        """Images per label ("" for unlabelled), of those matching `filter_expr`."""
        response = self._call(self._catalog.CountLabels,
                              pb.CountLabelsRequest(filter=filter_expr), timeout_s)
        return dict(response.counts)

    def list_collections(self, timeout_s: float | None = None) -> list[CollectionSummary]:
        """Every Lookalike collection on the server's Milvus, and which one it serves."""
        response = self._call(self._admin.ListCollections, pb.ListCollectionsRequest(), timeout_s)
        return [_collection(c) for c in response.collections]

    def rebuild_index(
        self, index_type: str = "", params: dict[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> RebuildResult:
        """Rebuild the served collection's vector index (another type, or the same afresh)."""
        request = pb.RebuildIndexRequest(index_type=index_type, params=params or {})
        r = self._call(self._admin.RebuildIndex, request, timeout_s)
        return RebuildResult(index_type=r.index_type, index_params=dict(r.index_params),
                             seconds=r.seconds)

    def drop_collection(self, name: str, confirm: str, timeout_s: float | None = None) -> DropResult:
        """Drop a collection; `confirm` must repeat its name."""
        r = self._call(self._admin.DropCollection,
                       pb.DropCollectionRequest(name=name, confirm=confirm), timeout_s)
        return DropResult(dropped_images=r.dropped_images, recreated=r.recreated)

    def start_ingest(self, source: str, timeout_s: float | None = None) -> Job:
        """Start ingesting a folder or S3 prefix on the server into the served collection."""
        return _job(self._call(self._jobs.StartIngest, pb.StartIngestRequest(source=source),
                               timeout_s))

    def start_evaluation(
        self, folder: str, configs: Sequence[str] = (), ablation: bool = False,
        timeout_s: float | None = None,
    ) -> Job:
        """Start evaluating retrieval on a labelled folder on the server."""
        request = pb.StartEvaluationRequest(folder=folder, configs=list(configs), ablation=ablation)
        return _job(self._call(self._jobs.StartEvaluation, request, timeout_s))

    def start_training(
        self, folder: str, *, loss: str = "", bits: int = 0, epochs: int = 0, backbone: str = "",
        timeout_s: float | None = None,
    ) -> Job:
        """Start fine-tuning a model on a labelled folder on the server; when it finishes it
        is compared with the pretrained one on the held-out half and registered. Unset
        arguments: the server's defaults (hash loss, 48 bits, the served backbone)."""
        request = pb.TrainRequest(folder=folder, loss=loss, bits=bits, epochs=epochs,
                                  backbone=backbone)
        return _job(self._call(self._jobs.StartTraining, request, timeout_s))

    def start_rollout(
        self, version: str, *, confirm: bool = False, timeout_s: float | None = None
    ) -> Job:
        """Start rebuilding the served collection with a registered model version, served once
        complete; the server refuses it unless `confirm`."""
        request = pb.RollOutRequest(version=version, confirm=confirm)
        return _job(self._call(self._jobs.StartRollOut, request, timeout_s))

    def list_models(self, timeout_s: float | None = None) -> list[ModelInfo]:
        """The server's registered model versions, oldest first."""
        response = self._call(self._jobs.ListModels, pb.ListModelsRequest(), timeout_s)
        return [_model(m) for m in response.models]

    def get_job(self, job_id: str, timeout_s: float | None = None) -> Job:
        """A job's state and progress."""
        return _job(self._call(self._jobs.GetJob, pb.GetJobRequest(id=job_id), timeout_s))

    def list_jobs(self, timeout_s: float | None = None) -> list[Job]:
        """The server's jobs, most recent first."""
        response = self._call(self._jobs.ListJobs, pb.ListJobsRequest(), timeout_s)
        return [_job(j) for j in response.jobs]

    def cancel_job(self, job_id: str, timeout_s: float | None = None) -> Job:
        """Ask a job to stop at its next batch; what it stored stays."""
        return _job(self._call(self._jobs.CancelJob, pb.CancelJobRequest(id=job_id), timeout_s))

    def health_report(self) -> dict[str, bool]:
        """SERVING or not, for the whole server ("") and for each lookalike.v1 service."""
        names = ("", *(s.full_name for s in pb.DESCRIPTOR.services_by_name.values()))
        return {name: self.healthy(name) for name in names}

    def healthy(self, service: str = "") -> bool:
        """Whether the server reports SERVING for `service` ("" = the whole server)."""
        try:
            return self._check(service).status is HealthStatus.SERVING
        except grpc.RpcError:
            return False

    def health(self, service: str = "") -> HealthCheck:
        """What the server reports for `service` ("" = the whole server); when no server
        answers, why (`diagnose_unreachable`: nothing listens, or it speaks TLS and this client
        plaintext, or the reverse)."""
        try:
            return self._check(service)
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details() or ""
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            failure = (details if code == grpc.StatusCode.UNAVAILABLE
                       else f"no answer within {self.timeout_s:g} s")
            return diagnose_unreachable(self.address, bool(self.config.tls_ca), failure,
                                        timeout_s=min(self.timeout_s, 1.0))
        # A server answered, with an error rather than a status (no health service, say).
        return HealthCheck(HealthStatus.NOT_SERVING, f"{code.name}: {details}")

    def _check(self, service: str) -> HealthCheck:
        response = self._health.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=self.timeout_s
        )
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        if status == "SERVING":
            return HealthCheck(HealthStatus.SERVING)
        return HealthCheck(HealthStatus.NOT_SERVING, "" if status == "NOT_SERVING" else status)


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Everything a client needs to reach a server (hashable, so a UI can cache by it)."""

    address: str
    timeout_s: float = 30.0
    token: str = ""
    tls_ca: str = ""

    @classmethod
    def from_settings(cls, client: ClientSettings) -> ClientConfig:
        """The configuration the client settings describe."""
        return cls(
            address=client.address, timeout_s=client.timeout_s,
            token=client.token.get_secret_value(), tls_ca=client.tls_ca,
        )

    def connect(self) -> LookalikeClient:
        """A client for this configuration."""
        return LookalikeClient(
            self.address, timeout_s=self.timeout_s, token=self.token, tls_ca=self.tls_ca
        )


def client_config_from_env() -> ClientConfig:
    """The client settings (address, timeout, token, TLS CA) from the environment.

    For a client process's own composition root, such as the Streamlit app.
    """
    from lookalike.core.settings import Settings

    return ClientConfig.from_settings(Settings().client)
