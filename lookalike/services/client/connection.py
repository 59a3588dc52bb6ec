"""The blocking client of the lookalike.v1 API: a channel to one server and a method per RPC,
its replies mapped to plain values (mapping.py); and the configuration a client is made from."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from numpy.typing import NDArray

from lookalike.core.search_defaults import DEFAULT_TOP_K
from lookalike.services.client import mapping
from lookalike.services.client.errors import ClientError, request_id
from lookalike.services.client.values import (
    BatchSearchResult,
    CollectionSummary,
    DropResult,
    EmbedResponse,
    EmbedResult,
    GetResponse,
    Job,
    Page,
    RebuildResult,
    SearchQuery,
    SearchResponse,
    Stats,
    UpsertItem,
    UpsertResult,
)
from lookalike.services.gen.lookalike.v1 import lookalike_pb2 as pb
from lookalike.services.gen.lookalike.v1 import lookalike_pb2_grpc as pb_grpc
from lookalike.services.job_summaries import ModelInfo
from lookalike.services.reachability import HealthCheck, HealthStatus, diagnose_unreachable

if TYPE_CHECKING:
    from lookalike.core.settings import ClientSettings

Reply = TypeVar("Reply")


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
            raise ClientError(exc.code(), exc.details() or "", request_id(exc),
                              address=self.address, tls=bool(self.config.tls_ca)) from None

    def search(
        self,
        *,
        image: bytes | None = None,
        image_id: int | None = None,
        vector: NDArray[np.float32] | None = None,
        top_k: int = DEFAULT_TOP_K,
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
        request = mapping.search_request(SearchQuery(
            image=image, image_id=image_id, vector=vector, top_k=top_k, filter_expr=filter_expr,
            min_score=min_score, include_thumbnails=include_thumbnails, ids_only=ids_only,
            qe_n=qe_n, verify=verify, mode=mode, ef=ef, nprobe=nprobe,
            rerank_factor=rerank_factor, route_top_n=route_top_n, labels=tuple(labels),
            tags=tuple(tags),
        ))
        return mapping.search_response(self._call(self._search.Search, request, timeout_s))

    def batch_search(
        self, queries: Sequence[SearchQuery], timeout_s: float | None = None
    ) -> list[BatchSearchResult]:
        """One response or error per query, in order."""
        request = pb.BatchSearchRequest(requests=[mapping.search_request(q) for q in queries])
        return mapping.batch_results(self._call(self._search.BatchSearch, request, timeout_s))

    def embed_with_model(
        self, images: Sequence[bytes], timeout_s: float | None = None
    ) -> EmbedResponse:
        """One embedding or error per encoded image, in order, and the model's spec."""
        request = pb.EmbedRequest(images=list(images))
        return mapping.embed_response(self._call(self._embed.Embed, request, timeout_s))

    def embed(self, images: Sequence[bytes]) -> list[EmbedResult]:
        """One embedding or error per encoded image, in order."""
        return self.embed_with_model(images).results

    def upsert(self, items: Sequence[UpsertItem], timeout_s: float | None = None) -> list[UpsertResult]:
        """Store images with metadata (replacing the metadata of those already stored)."""
        request = mapping.upsert_request(items)
        return mapping.upsert_results(self._call(self._catalog.Upsert, request, timeout_s))

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
        return mapping.get_response(response)

    def stats(self, timeout_s: float | None = None) -> Stats:
        """Size, index and model of the collection."""
        return mapping.stats(self._call(self._catalog.Stats, pb.StatsRequest(), timeout_s))

    def list_images(
        self, *, offset: int = 0, limit: int = 50, filter_expr: str = "",
        labels: Sequence[str] = (), tags: Sequence[str] = (), include_thumbnails: bool = True,
        timeout_s: float | None = None,
    ) -> Page:
        """One page of the collection in id order, and how many images match in all."""
        request = pb.ListRequest(filter=filter_expr, labels=list(labels), tags=list(tags),
                                 offset=offset, limit=limit, include_thumbnails=include_thumbnails)
        return mapping.page(self._call(self._catalog.List, request, timeout_s))

    def count_labels(self, filter_expr: str = "", timeout_s: float | None = None) -> dict[str, int]:
        """Images per label ("" for unlabelled), of those matching `filter_expr`."""
        response = self._call(self._catalog.CountLabels,
                              pb.CountLabelsRequest(filter=filter_expr), timeout_s)
        return dict(response.counts)

    def list_collections(self, timeout_s: float | None = None) -> list[CollectionSummary]:
        """Every Lookalike collection on the server's Milvus, and which one it serves."""
        response = self._call(self._admin.ListCollections, pb.ListCollectionsRequest(), timeout_s)
        return [mapping.collection(c) for c in response.collections]

    def rebuild_index(
        self, index_type: str = "", params: dict[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> RebuildResult:
        """Rebuild the served collection's vector index (another type, or the same afresh)."""
        request = pb.RebuildIndexRequest(index_type=index_type, params=params or {})
        return mapping.rebuild_result(self._call(self._admin.RebuildIndex, request, timeout_s))

    def drop_collection(self, name: str, confirm: str, timeout_s: float | None = None) -> DropResult:
        """Drop a collection; `confirm` must repeat its name."""
        request = pb.DropCollectionRequest(name=name, confirm=confirm)
        return mapping.drop_result(self._call(self._admin.DropCollection, request, timeout_s))

    def start_ingest(self, source: str, timeout_s: float | None = None) -> Job:
        """Start ingesting a folder or S3 prefix on the server into the served collection."""
        return mapping.job(self._call(self._jobs.StartIngest, pb.StartIngestRequest(source=source),
                               timeout_s))

    def start_evaluation(
        self, folder: str, configs: Sequence[str] = (), ablation: bool = False,
        timeout_s: float | None = None,
    ) -> Job:
        """Start evaluating retrieval on a labelled folder on the server."""
        request = pb.StartEvaluationRequest(folder=folder, configs=list(configs), ablation=ablation)
        return mapping.job(self._call(self._jobs.StartEvaluation, request, timeout_s))

    def start_training(
        self, folder: str, *, loss: str = "", bits: int = 0, epochs: int = 0, backbone: str = "",
        timeout_s: float | None = None,
    ) -> Job:
        """Start fine-tuning a model on a labelled folder on the server; when it finishes it
        is compared with the pretrained one on the held-out half and registered. Unset
        arguments: the server's defaults (hash loss, 48 bits, the served backbone)."""
        request = pb.TrainRequest(folder=folder, loss=loss, bits=bits, epochs=epochs,
                                  backbone=backbone)
        return mapping.job(self._call(self._jobs.StartTraining, request, timeout_s))

    def start_rollout(
        self, version: str, *, confirm: bool = False, timeout_s: float | None = None
    ) -> Job:
        """Start rebuilding the served collection with a registered model version, served once
        complete; the server refuses it unless `confirm`."""
        request = pb.RollOutRequest(version=version, confirm=confirm)
        return mapping.job(self._call(self._jobs.StartRollOut, request, timeout_s))

    def list_models(self, timeout_s: float | None = None) -> list[ModelInfo]:
        """The server's registered model versions, oldest first."""
        response = self._call(self._jobs.ListModels, pb.ListModelsRequest(), timeout_s)
        return [mapping.model(m) for m in response.models]

    def get_job(self, job_id: str, timeout_s: float | None = None) -> Job:
        """A job's state and progress."""
        return mapping.job(self._call(self._jobs.GetJob, pb.GetJobRequest(id=job_id), timeout_s))

    def list_jobs(self, timeout_s: float | None = None) -> list[Job]:
        """The server's jobs, most recent first."""
        response = self._call(self._jobs.ListJobs, pb.ListJobsRequest(), timeout_s)
        return [mapping.job(j) for j in response.jobs]

    def cancel_job(self, job_id: str, timeout_s: float | None = None) -> Job:
        """Ask a job to stop at its next batch; what it stored stays."""
        return mapping.job(self._call(self._jobs.CancelJob, pb.CancelJobRequest(id=job_id), timeout_s))

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
