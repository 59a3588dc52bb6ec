"""The gRPC server, assembled from small setup functions."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from lookalike.core.errors import ConfigError
from lookalike.core.settings import ServerSettings
from lookalike.embedder.runtime import Embedder
from lookalike.services.admin import AdminServicer
from lookalike.services.auth import AuthInterceptor
from lookalike.services.batching import BatchedEmbedder
from lookalike.services.budget import MB, ByteBudget, MemoryReturner, PayloadBudgetInterceptor
from lookalike.services.catalog import Catalog
from lookalike.services.errors import EmbedderUnavailable
from lookalike.services.gen.lookalike.v1 import lookalike_pb2 as pb
from lookalike.services.gen.lookalike.v1 import lookalike_pb2_grpc as pb_grpc
from lookalike.services.health import Check, HealthChecker
from lookalike.services.interceptors import ErrorMappingInterceptor
from lookalike.services.jobs import JobRegistry, JobRunners, JobServicer
from lookalike.services.metrics import MetricsEndpoint, ServerMetrics, serve_metrics
from lookalike.services.model_switch import ModelSwitch
from lookalike.services.remote_embedder import RemoteEmbedder
from lookalike.services.search import QueryEmbedder, SearchEngine
from lookalike.services.servicers import CatalogServicer, EmbedServicer, SearchServicer

SERVICE_NAMES = tuple(s.full_name for s in pb.DESCRIPTOR.services_by_name.values())
EMBED_SERVICE = pb.DESCRIPTOR.services_by_name["EmbedService"].full_name
SEARCH_SERVICE = pb.DESCRIPTOR.services_by_name["SearchService"].full_name
CATALOG_SERVICE = pb.DESCRIPTOR.services_by_name["CatalogService"].full_name
ADMIN_SERVICE = pb.DESCRIPTOR.services_by_name["AdminService"].full_name
JOB_SERVICE = pb.DESCRIPTOR.services_by_name["JobService"].full_name
log = logging.getLogger("lookalike.server")
BUDGET_SETTING = "LOOKALIKE_SERVER__INFLIGHT_BUDGET_MB"


@dataclass(slots=True)
class RunningServer:
    """A started server, the port it listens on, and what runs beside it."""

    server: grpc.Server
    port: int
    health: health.HealthServicer
    checker: HealthChecker
    metrics: ServerMetrics
    metrics_endpoint: MetricsEndpoint | None = None
    # The served model's batcher and those of models roll-outs staged; closed on stop.
    batchers: list[BatchedEmbedder] = field(default_factory=list)
    jobs: JobRegistry | None = None
    tls: bool = False
    # Request bytes held by calls in progress, and what hands their memory back after a burst.
    budget: ByteBudget | None = None
    memory: MemoryReturner | None = None
    stopped: bool = False

    @property
    def address(self) -> str:
        """host:port for clients on this machine."""
        return f"127.0.0.1:{self.port}"

    @property
    def metrics_port(self) -> int | None:
        """Port of the /metrics endpoint, if one is served."""
        return self.metrics_endpoint.port if self.metrics_endpoint else None

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop accepting calls, let in-flight calls finish for up to `grace_s`, then stop.

        Running jobs are cancelled first and given as long to finish their batch in flight.
        """
        if self.stopped:
            return
        self.stopped = True
        self.checker.stop()
        self.health.enter_graceful_shutdown()
        if self.jobs is not None:
            self.jobs.shutdown(grace_s)
        self.server.stop(grace_s).wait()
        for batcher in self.batchers:
            batcher.close()
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.stop()
        if self.memory is not None:
            self.memory.stop()


def _add_health(server: grpc.Server) -> health.HealthServicer:
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    for name in ("", *SERVICE_NAMES):
        servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return servicer


def _health_checker(
    servicer: health.HealthServicer, engine: SearchEngine, settings: ServerSettings
) -> HealthChecker:
    checks: dict[str, Check] = {"vector_store": engine.store.ping, "blob_store": engine.blobs.ping}
    embed_needs: tuple[str, ...] = ()
    inner = engine.embedder.inner if isinstance(engine.embedder, BatchedEmbedder) else engine.embedder
    if isinstance(inner, RemoteEmbedder):
        remote = inner

        def check_remote() -> None:
            if not remote.healthy():
                raise EmbedderUnavailable("the remote EmbedService is not serving")

        checks["embedder"] = check_remote
        embed_needs = ("embedder",)
    stores = ("vector_store", "blob_store")
    return HealthChecker(
        servicer, checks,
        {EMBED_SERVICE: embed_needs, SEARCH_SERVICE: (*stores, *embed_needs),
         CATALOG_SERVICE: (*stores, *embed_needs), ADMIN_SERVICE: ("vector_store",),
         JOB_SERVICE: stores},
        settings.health_interval_s,
    )


def _add_reflection(server: grpc.Server) -> None:
    names = (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)


def _add_api(server: grpc.Server, engine: SearchEngine, catalog: Catalog,
             jobs: JobServicer) -> None:
    pb_grpc.add_EmbedServiceServicer_to_server(EmbedServicer(engine), server)
    pb_grpc.add_SearchServiceServicer_to_server(SearchServicer(engine), server)
    pb_grpc.add_CatalogServiceServicer_to_server(CatalogServicer(catalog), server)
    pb_grpc.add_AdminServiceServicer_to_server(AdminServicer(engine), server)
    pb_grpc.add_JobServiceServicer_to_server(jobs, server)


def _interceptors(settings: ServerSettings, metrics: ServerMetrics,
                  budget: ByteBudget) -> list[grpc.ServerInterceptor]:
    # The first is outermost: it maps the errors (UNAUTHENTICATED and RESOURCE_EXHAUSTED too)
    # and logs every call; the budget comes before authentication, so that unauthenticated
    # uploads are bounded too.
    interceptors: list[grpc.ServerInterceptor] = [
        ErrorMappingInterceptor(metrics),
        PayloadBudgetInterceptor(budget, BUDGET_SETTING)]
    tokens = [t.get_secret_value() for t in settings.tokens if t.get_secret_value()]
    if tokens:
        interceptors.append(AuthInterceptor(tokens))
    return interceptors


def _listen(server: grpc.Server, settings: ServerSettings) -> tuple[int, bool]:
    address = f"{settings.host}:{settings.port}"
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise ConfigError("TLS needs both server.tls_cert and server.tls_key")
    if settings.tls_cert:
        try:
            credentials = grpc.ssl_server_credentials(
                [(Path(settings.tls_key).read_bytes(), Path(settings.tls_cert).read_bytes())]
            )
        except OSError as exc:
            raise ConfigError(f"cannot read the TLS certificate or key: {exc}") from exc
        return server.add_secure_port(address, credentials), True
    return server.add_insecure_port(address), False


def _batching(
    settings: ServerSettings, metrics: ServerMetrics, batchers: list[BatchedEmbedder]
) -> Callable[[QueryEmbedder], QueryEmbedder]:
    """How the server serves an embedder: behind a dynamic batcher (kept in `batchers`, to be
    closed on stop) when batching is on, as it is otherwise."""

    def serve(embedder: QueryEmbedder) -> QueryEmbedder:
        if not settings.batching:
            return embedder
        batcher = BatchedEmbedder(
            embedder, max_batch=settings.batch_max_size,
            max_wait_s=settings.batch_max_wait_ms / 1000.0,
            max_queued=settings.batch_queue_size, metrics=metrics,
        )
        batchers.append(batcher)
        return batcher

    return serve


def start_server(
    engine: SearchEngine,
    settings: ServerSettings,
    *,
    thumbnail_px: int = 256,
    max_pixels: int = 50_000_000,
    jobs: JobRunners | None = None,
    return_memory: bool = True,
) -> RunningServer:
    """Start serving `engine` on settings.host:settings.port (port 0 picks a free port).

    Concurrent embeddings are batched (settings.batching); `thumbnail_px` and `max_pixels`
    apply to images stored through CatalogService.Upsert. `jobs` runs JobService's ingest and
    evaluation jobs on sources inside settings.job_roots; without it JobService refuses them.
    `return_memory` hands freed heap memory back to the system after each burst of requests
    (off only to measure what it saves).
    """
    metrics = ServerMetrics()
    if isinstance(engine.embedder, Embedder):
        engine.embedder.load()
        metrics.model_load_seconds.set(engine.embedder.load_seconds)
        plan = engine.embedder.plan
        metrics.describe_model(engine.embedder.spec.backbone, str(plan.device),
                               engine.embedder.engine, plan.precision)
    else:
        # Its spec would cost a call to the EmbedService, which may not be up yet.
        metrics.describe_model("", "remote", "remote", "")
    batchers: list[BatchedEmbedder] = []
    serve = _batching(settings, metrics, batchers)
    if settings.batching:
        engine = engine.with_embedder(serve(engine.embedder))
    if isinstance(engine.follower, ModelSwitch):
        # Models a roll-out stages are served like this one: batched, with the same metrics.
        engine.follower.wrap_with(serve)
    max_bytes = settings.max_message_mb * MB
    memory = MemoryReturner() if return_memory else None
    budget = ByteBudget(settings.inflight_budget_mb * MB,
                        on_idle=memory.request if memory is not None else None)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="grpc"),
        interceptors=_interceptors(settings, metrics, budget),
        options=[
            ("grpc.max_receive_message_length", max_bytes),
            ("grpc.max_send_message_length", max_bytes),
        ],
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
    )
    job_servicer = JobServicer(jobs, settings.job_roots)
    _add_api(server, engine, Catalog(engine, thumbnail_px=thumbnail_px, max_pixels=max_pixels),
             job_servicer)
    health_servicer = _add_health(server)
    _add_reflection(server)
    try:
        port, tls = _listen(server, settings)
        if port == 0:
            raise OSError(f"cannot listen on {settings.host}:{settings.port}")
    except (ConfigError, OSError):
        for batcher in batchers:
            batcher.close()
        if memory is not None:
            memory.stop()
        raise
    checker = _health_checker(health_servicer, engine, settings)
    endpoint = (serve_metrics(metrics, settings.metrics_host, settings.metrics_port)
                if settings.metrics_port else None)
    server.start()
    checker.start()
    return RunningServer(server=server, port=port, health=health_servicer, checker=checker,
                         metrics=metrics, metrics_endpoint=endpoint, batchers=batchers,
                         jobs=job_servicer.registry, tls=tls, budget=budget, memory=memory)
