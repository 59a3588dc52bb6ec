"""Prometheus metrics of one server, in its own registry, served on a /metrics port."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 128, 256)


class ServerMetrics:
    """Request counts and latencies per method and status, batching and model gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "lookalike_grpc_requests", "gRPC calls by method and status code.",
            ["method", "code"], registry=self.registry,
        )
        self.latency = Histogram(
            "lookalike_grpc_request_seconds", "gRPC call latency by method and status code.",
            ["method", "code"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.batch_size = Histogram(
            "lookalike_embed_batch_size", "Images per model batch.",
            buckets=_BATCH_BUCKETS, registry=self.registry,
        )
        self.forward_seconds = Histogram(
            "lookalike_embed_forward_seconds", "Model time per batch.",
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.queue_depth = Gauge(
            "lookalike_embed_queue_depth", "Images waiting for the model.", registry=self.registry,
        )
        self.model_load_seconds = Gauge(
            "lookalike_model_load_seconds", "Time it took to load the embedding model.",
            registry=self.registry,
        )

        self.model = Gauge(
            "lookalike_model_info", "The model this server embeds with (1), by backbone, "
            "device, engine (torch, onnxruntime; remote for an EmbedService) and precision.",
            ["backbone", "device", "engine", "precision"], registry=self.registry,
        )

    def describe_model(self, backbone: str, device: str, engine: str, precision: str) -> None:
        """Label the served model, so dashboards can tell which engine produced the numbers."""
        self.model.labels(backbone, device, engine, precision).set(1)

    def observe_call(self, method: str, code: str, seconds: float) -> None:
        """Count one finished call."""
        self.requests.labels(method, code).inc()
        self.latency.labels(method, code).observe(seconds)


@dataclass(slots=True)
class MetricsEndpoint:
    """A running /metrics HTTP endpoint."""

    httpd: Any
    port: int

    def stop(self) -> None:
        """Stop serving and release the port."""
        self.httpd.shutdown()
        self.httpd.server_close()


def serve_metrics(metrics: ServerMetrics, host: str, port: int) -> MetricsEndpoint:
    """Serve `metrics` at http://host:port/metrics (port 0 picks a free one)."""
    httpd, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    return MetricsEndpoint(httpd=httpd, port=int(httpd.server_address[1]))
