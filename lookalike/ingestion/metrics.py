"""Prometheus counters and stage histograms of an ingestion run, served when a port is set."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

OUTCOMES = ("added", "already_stored", "duplicate", "failed")
STAGES = ("read", "decode", "embed", "write_blobs", "write_vectors")


class IngestMetrics:
    """Counters per outcome, retries per store and seconds per stage, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.images = Counter(
            "lookalike_ingest_images", "Images by outcome.", ["outcome"], registry=self.registry
        )
        self.retries = Counter(
            "lookalike_ingest_retries", "Write retries by store.", ["store"],
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "lookalike_ingest_stage_seconds", "Seconds one batch spent in a stage.", ["stage"],
            registry=self.registry,
            buckets=(0.001, 0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        for outcome in OUTCOMES:
            self.images.labels(outcome=outcome)
        for stage in STAGES:
            self.stage_seconds.labels(stage=stage)
        self._server: Any = None

    def serve(self, host: str, port: int) -> IngestMetrics:
        """Expose `/metrics` on host:port until `close()`."""
        self._server, _ = start_http_server(port, addr=host, registry=self.registry)
        return self

    def close(self) -> None:
        """Stop the HTTP endpoint, if one was started."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> IngestMetrics:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
