"""The gRPC server, assembled from small setup functions."""

from __future__ import annotations

from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from lookalike.core.settings import ServerSettings
from lookalike.services.gen.lookalike.v1 import lookalike_pb2 as pb
from lookalike.services.gen.lookalike.v1 import lookalike_pb2_grpc as pb_grpc
from lookalike.services.interceptors import ErrorMappingInterceptor
from lookalike.services.search import SearchEngine
from lookalike.services.servicers import EmbedServicer, SearchServicer

SERVICE_NAMES = tuple(s.full_name for s in pb.DESCRIPTOR.services_by_name.values())


@dataclass(slots=True)
class RunningServer:
    """A started server and the port it listens on."""

    server: grpc.Server
    port: int
    health: health.HealthServicer

    @property
    def address(self) -> str:
        """host:port for clients on this machine."""
        return f"127.0.0.1:{self.port}"

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop accepting calls, let in-flight calls finish for up to `grace_s`, then stop."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace_s).wait()


def _add_health(server: grpc.Server) -> health.HealthServicer:
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    for name in ("", *SERVICE_NAMES):
        servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return servicer


def _add_reflection(server: grpc.Server) -> None:
    names = (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)


def _add_api(server: grpc.Server, engine: SearchEngine) -> None:
    pb_grpc.add_EmbedServiceServicer_to_server(EmbedServicer(engine), server)
    pb_grpc.add_SearchServiceServicer_to_server(SearchServicer(engine), server)


def start_server(engine: SearchEngine, settings: ServerSettings) -> RunningServer:
    """Start serving `engine` on settings.host:settings.port (port 0 picks a free port)."""
    max_bytes = settings.max_message_mb * 1024 * 1024
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="grpc"),
        interceptors=[ErrorMappingInterceptor()],
        options=[
            ("grpc.max_receive_message_length", max_bytes),
            ("grpc.max_send_message_length", max_bytes),
        ],
    )
    _add_api(server, engine)
    health_servicer = _add_health(server)
    _add_reflection(server)
    port = server.add_insecure_port(f"{settings.host}:{settings.port}")
    if port == 0:
        raise OSError(f"cannot listen on {settings.host}:{settings.port}")
    server.start()
    return RunningServer(server=server, port=port, health=health_servicer)
