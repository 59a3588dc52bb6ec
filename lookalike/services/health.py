"""Health per service, kept current by a background thread that pings what each service needs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence

from grpc_health.v1 import health, health_pb2

from lookalike.core.errors import LookalikeError

log = logging.getLogger("lookalike.health")
Check = Callable[[], None]


class HealthChecker:
    """Sets each service SERVING while all of its checks pass, NOT_SERVING otherwise.

    `needs` maps a service name to the names of the checks it depends on; the overall status
    ("") is SERVING only when every check passes.
    """

    def __init__(
        self,
        servicer: health.HealthServicer,
        checks: Mapping[str, Check],
        needs: Mapping[str, Sequence[str]],
        interval_s: float,
    ) -> None:
        self._servicer = servicer
        self._checks = dict(checks)
        self._needs = {name: tuple(deps) for name, deps in needs.items()}
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="health-checker", daemon=True)
        self.failures: dict[str, str] = {}

    def check_once(self) -> dict[str, bool]:
        """Run every check now and publish the statuses; SERVING per service."""
        failures: dict[str, str] = {}
        for name, check in self._checks.items():
            try:
                check()
            except (LookalikeError, OSError) as exc:
                failures[name] = str(exc)
        for name, reason in failures.items():
            if self.failures.get(name) != reason:
                log.warning("health check %s failed: %s", name, reason)
        for name in set(self.failures) - set(failures):
            log.info("health check %s passes again", name)
        self.failures = failures
        statuses = {service: not (set(deps) & set(failures)) for service, deps in self._needs.items()}
        statuses[""] = not failures
        for service, ok in statuses.items():
            self._servicer.set(
                service,
                health_pb2.HealthCheckResponse.SERVING if ok
                else health_pb2.HealthCheckResponse.NOT_SERVING,
            )
        return statuses

    def start(self) -> None:
        """Check now, then every interval in the background."""
        self.check_once()
        self._thread.start()

    def stop(self) -> None:
        """Stop the background checks."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.check_once()
